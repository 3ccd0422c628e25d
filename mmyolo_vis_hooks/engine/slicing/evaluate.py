"""Detections against COCO ground truth: recall and precision of one image (IoU matching),
and COCO mAP (pycocotools) of whole runs, per class, side by side."""
import contextlib
import io
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..core.geometry import box_iou, same_label_iou
from .detections import Detections


def read_coco_file(ann_file: str) -> Dict:
    """A COCO annotation file's content, checked for ``images``, ``annotations`` and
    ``categories`` lists.

    Raises:
        FileNotFoundError: No file. ValueError: Not JSON, or not a COCO annotation file.
    """
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    try:
        with open(ann_file, encoding='utf-8') as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'{ann_file} is not a JSON file ({err})') from None
    missing = [k for k in ('images', 'annotations', 'categories')
               if not isinstance(coco, dict) or not isinstance(coco.get(k), list)]
    if missing:
        raise ValueError(f'{ann_file} is not a COCO annotation file: it has no '
                         f'{", ".join(missing)} list(s)')
    return coco


def category_labels(coco: Mapping, class_names: Optional[Sequence[str]] = None,
                    source: str = 'the annotation file') -> Dict[int, int]:
    """0-based model labels of a COCO file's category ids: by category name when
    ``class_names`` are given (every category must be a model class), else the category
    ids in ascending order."""
    cats = sorted(coco['categories'], key=lambda c: c['id'])
    if class_names is None:
        return {c['id']: i for i, c in enumerate(cats)}
    names = list(class_names)
    missing = [c['name'] for c in cats if c['name'] not in names]
    if missing:
        raise ValueError(f'categories {missing} of {source} are not model classes {names}')
    return {c['id']: names.index(c['name']) for c in cats}


def load_coco_ground_truth(ann_file: str, file_name: str,
                           class_names: Optional[Sequence[str]] = None, rotated: bool = False
                           ) -> Tuple[np.ndarray, np.ndarray]:
    """Ground-truth boxes (xyxy, or with ``rotated`` the annotations' ``rbox`` [cx, cy, w, h,
    angle]) and 0-based labels of one image of a COCO file.

    Labels follow ``class_names`` by category name when given, else the category ids in
    ascending order.
    """
    coco = read_coco_file(ann_file)
    images = [im for im in coco['images'] if im['file_name'] == file_name]
    if not images:
        raise ValueError(f'{file_name} is not an image of {ann_file}')
    cat_to_label = category_labels(coco, class_names, ann_file)
    anns = [a for a in coco['annotations'] if a['image_id'] == images[0]['id']]
    labels = np.array([cat_to_label[a['category_id']] for a in anns], np.int64)
    if rotated:
        return rotated_ground_truth(anns, ann_file), labels
    boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                       a['bbox'][1] + a['bbox'][3]] for a in anns], np.float64).reshape(-1, 4)
    return boxes, labels


def rotated_ground_truth(anns: Sequence[Mapping], ann_file: str) -> np.ndarray:
    """``(G, 5)`` rotated boxes of COCO annotations that carry ``rbox`` [cx, cy, w, h,
    angle] (radians, mmrotate's ``RotatedBoxes``): what rotated detections are evaluated
    against.

    Raises:
        ValueError: An annotation has no ``rbox``.
    """
    missing = [a.get('id') for a in anns if len(a.get('rbox') or ()) != 5]
    if missing:
        raise ValueError(f'rotated detections need rotated ground truth: annotation(s) '
                         f'{missing[:5]} of {ann_file} have no rbox [cx, cy, w, h, angle]')
    return np.array([a['rbox'] for a in anns], np.float64).reshape(-1, 5)


def _coco_eval(gt, res, rotated: bool):
    """pycocotools' ``COCOeval`` for boxes; with ``rotated`` it matches by the rotated IoU of
    the annotations' ``rbox`` (its ``computeIoU``: everything else is COCO's)."""
    from pycocotools.cocoeval import COCOeval
    if not rotated:
        return COCOeval(gt, res, iouType='bbox')

    class RotatedCOCOeval(COCOeval):

        def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
            gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
            if not gts or not dts:
                return []
            order = np.argsort([-d['score'] for d in dts], kind='mergesort')
            dts = [dts[i] for i in order[:self.params.maxDets[-1]]]
            return box_iou(np.array([d['rbox'] for d in dts]),
                           np.array([g['rbox'] for g in gts]))
    return RotatedCOCOeval(gt, res, iouType='bbox')


@dataclass
class MatchStats:
    """Greedy one-to-one matching result.

    Args:
        true_positives (int): Detections matched to a distinct ground-truth box.
        duplicates (int): Unmatched detections overlapping a ground-truth box at the IoU
            threshold: an object boxed again, or boxed with a wrong label.
        background (int): Other unmatched detections.
        missed (int): Ground-truth boxes no detection matched.
    """
    true_positives: int
    duplicates: int
    background: int
    missed: int

    @property
    def recall(self) -> float:
        total = self.true_positives + self.missed
        return self.true_positives / total if total else 1.0

    @property
    def precision(self) -> float:
        total = self.true_positives + self.duplicates + self.background
        return self.true_positives / total if total else 1.0


def match_detections(dets: Detections, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                     iou_thr: float = 0.5, class_aware: bool = True) -> MatchStats:
    """Matches detections (highest score first) to ground truth at IoU >= ``iou_thr``.

    With ``class_aware`` a match also needs the same label (a right box with a wrong label
    counts as a duplicate).
    """
    iou = box_iou(dets.bboxes, gt_boxes)
    match_iou = (same_label_iou(dets.bboxes, dets.labels, gt_boxes, gt_labels) if class_aware
                 else iou)
    taken = np.zeros(len(gt_boxes), bool)
    tp = dup = bg = 0
    for i in np.argsort(-dets.scores, kind='stable'):
        candidates = (match_iou[i] >= iou_thr) & ~taken
        if candidates.any():
            taken[np.flatnonzero(candidates)[np.argmax(match_iou[i][candidates])]] = True
            tp += 1
        elif (iou[i] >= iou_thr).any():
            dup += 1
        else:
            bg += 1
    return MatchStats(tp, dup, bg, int((~taken).sum()))


def matched_fraction(ref: Detections, other: Detections, iou_thr: float = 0.95) -> float:
    """Share of ``ref`` boxes with a one-to-one partner in ``other`` of the same label at
    IoU >= ``iou_thr`` (how far two runs agree; 1.0 when both are empty): ``other`` taken as
    the ground truth of :func:`match_detections`."""
    if len(ref) == 0:
        return 1.0 if len(other) == 0 else 0.0
    return match_detections(ref, other.bboxes, other.labels, iou_thr).true_positives / len(ref)


@dataclass
class CocoMap:
    """COCO box AP of one run (pycocotools, area 'all').

    Args:
        mAP (float): AP averaged over IoU 0.50:0.95 and the classes.
        mAP_50 (float): AP at IoU 0.5.
        mAP_75 (float): AP at IoU 0.75.
        per_class (dict[str, tuple[float, float]]): Class name -> (AP, AP at IoU 0.5); NaN for
            a class without ground truth.
        num_detections (int): Detections evaluated (on images and classes of the ground
            truth).
    """
    mAP: float
    mAP_50: float
    mAP_75: float
    per_class: Dict[str, Tuple[float, float]]
    num_detections: int


@dataclass
class CocoEvaluation:
    """COCO mAP of one or more runs on the same images, against one ground truth.

    Args:
        ann_file (str): Where the ground truth came from.
        images (list[str]): File names of the evaluated images.
        gt_per_class (dict[str, int]): Ground-truth boxes (not crowd) evaluated per class.
        runs (dict[str, CocoMap]): Run name (e.g. ``sliced``, ``full image``) -> its AP.
        not_in_ground_truth (list[str]): Input images the annotation file does not have
            (not evaluated).
    """
    ann_file: str
    images: List[str]
    gt_per_class: Dict[str, int]
    runs: Dict[str, CocoMap] = field(default_factory=dict)
    not_in_ground_truth: List[str] = field(default_factory=list)

    @property
    def num_gt(self) -> int:
        return sum(self.gt_per_class.values())

    def table(self) -> str:
        """The runs side by side: one row for all classes, then one per class."""
        head = ['class', 'GT']
        for run in self.runs:
            head += [f'{run} mAP', f'{run} mAP@50']
        rows = [['all', str(self.num_gt)] + [
            f'{v:.3f}' for m in self.runs.values() for v in (m.mAP, m.mAP_50)]]
        for name, count in self.gt_per_class.items():
            rows.append([name, str(count)] + [
                '-' if np.isnan(v) else f'{v:.3f}' for m in self.runs.values()
                for v in m.per_class[name]])
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        lines = ['  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in [head] + rows]
        lines.insert(1, '  '.join('-' * w for w in widths))
        return '\n'.join(lines)

    def to_dict(self) -> Dict:
        """A JSON-ready dict (NaN as None)."""
        def num(v):
            return None if np.isnan(v) else round(float(v), 6)

        return dict(
            ann_file=self.ann_file, images=self.images, num_gt=self.num_gt,
            gt_per_class=self.gt_per_class, not_in_ground_truth=self.not_in_ground_truth,
            runs={name: dict(mAP=num(m.mAP), mAP_50=num(m.mAP_50), mAP_75=num(m.mAP_75),
                             num_detections=m.num_detections,
                             per_class={c: dict(AP=num(ap), AP_50=num(ap50))
                                        for c, (ap, ap50) in m.per_class.items()})
                  for name, m in self.runs.items()})


def match_images(gt_images: Sequence[Dict], det_images: Sequence[Dict]
                 ) -> Tuple[Dict[int, int], List[str]]:
    """Detection image id -> ground-truth image id, matched by ``file_name`` (else by base
    name when that is unique in the ground truth); and the unmatched detection images."""
    by_name = {im['file_name']: im['id'] for im in gt_images}
    base_count: Dict[str, int] = {}
    for im in gt_images:
        base = osp.basename(im['file_name'])
        base_count[base] = base_count.get(base, 0) + 1
    by_base = {osp.basename(im['file_name']): im['id'] for im in gt_images
               if base_count[osp.basename(im['file_name'])] == 1}
    pairs, unmatched = {}, []
    for im in det_images:
        gt_id = by_name.get(im['file_name'], by_base.get(osp.basename(im['file_name'])))
        if gt_id is None:
            unmatched.append(im['file_name'])
        else:
            pairs[im['id']] = gt_id
    return pairs, unmatched


def _quiet_coco(dataset: Dict):
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # 'creating index...'
        coco.createIndex()
    return coco


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else float('nan')


def evaluate_coco(ground_truth: str, runs: Mapping[str, Dict], class_names: Sequence[str]
                  ) -> CocoEvaluation:
    """COCO box mAP (pycocotools) of detection documents against one ground truth (rotated
    detections, whose annotations carry ``rbox``: by rotated IoU against the ground truth's
    ``rbox``, COCO's protocol otherwise).

    Every run is a COCO-style document as the large-image tool writes it (``images`` with
    ``file_name``, ``annotations`` with ``bbox``, ``score`` and ``category_id`` = label + 1);
    all runs must hold the same images. Images are matched to the ground truth by
    ``file_name`` (or by base name when unique there), classes by name. The images of the
    runs that the ground truth has are evaluated, with all their ground truth; the per-image
    detection limit is raised from COCO's 100 to what the runs hold (large images have more
    objects).

    Args:
        ground_truth (str): COCO annotation file.
        runs (Mapping[str, dict]): Run name -> detection document.
        class_names (Sequence[str]): The model's classes (label order).

    Returns:
        CocoEvaluation: mAP, mAP@50, mAP@75 and per-class AP of every run.

    Raises:
        ValueError: A ground-truth category is not a model class, the runs hold different
            images, or no image of the runs is in the ground truth.
    """
    coco = read_coco_file(ground_truth)
    cat_to_label = category_labels(coco, class_names, ground_truth)
    label_to_cat = {label: cat for cat, label in cat_to_label.items()}
    docs = list(runs.values())
    if not docs:
        raise ValueError('no run to evaluate')
    det_images = docs[0]['images']
    for name, doc in runs.items():
        if [im['file_name'] for im in doc['images']] != [im['file_name'] for im in det_images]:
            raise ValueError(f'run {name!r} holds other images than {next(iter(runs))!r}')
    pairs, unmatched = match_images(coco['images'], det_images)
    if not pairs:
        raise ValueError(f'none of the {len(det_images)} image(s) of the runs is in '
                         f'{ground_truth}')
    img_ids = sorted(set(pairs.values()))
    wanted = set(img_ids)
    # rotated detections (``rbox``) are matched to rotated ground truth by rotated IoU
    rotated = any('rbox' in ann for doc in docs for ann in doc['annotations'])
    gt_anns = []
    for ann in coco['annotations']:
        if ann['image_id'] in wanted and ann['category_id'] in cat_to_label:
            x, y, w, h = ann['bbox']
            gt_anns.append(dict(ann, area=ann.get('area', w * h),
                                iscrowd=int(ann.get('iscrowd', 0))))
    if rotated:
        rotated_ground_truth(gt_anns, ground_truth)
    gt = _quiet_coco(dict(images=[im for im in coco['images'] if im['id'] in wanted],
                          annotations=gt_anns, categories=coco['categories']))
    cat_ids = sorted(cat_to_label, key=lambda c: cat_to_label[c])
    names = {c: class_names[cat_to_label[c]] for c in cat_ids}
    gt_per_class = {names[c]: sum(1 for a in gt_anns if a['category_id'] == c and
                                  not a['iscrowd']) for c in cat_ids}
    evaluation = CocoEvaluation(
        ground_truth, [im['file_name'] for im in det_images if im['id'] in pairs], gt_per_class,
        not_in_ground_truth=unmatched)
    for run_name, doc in runs.items():
        dets = []
        for ann in doc['annotations']:
            cat = label_to_cat.get(ann['category_id'] - 1)
            if ann['image_id'] in pairs and cat is not None:
                dets.append(dict(id=len(dets) + 1, image_id=pairs[ann['image_id']],
                                 category_id=cat, bbox=list(ann['bbox']),
                                 area=ann.get('area', ann['bbox'][2] * ann['bbox'][3]),
                                 score=float(ann['score']), iscrowd=0))
                if rotated:
                    dets[-1]['rbox'] = list(ann['rbox'])
        per_image: Dict[int, int] = {}
        for det in dets:
            per_image[det['image_id']] = per_image.get(det['image_id'], 0) + 1
        res = _quiet_coco(dict(images=gt.dataset['images'], annotations=dets,
                               categories=coco['categories']))
        coco_eval = _coco_eval(gt, res, rotated)
        coco_eval.params.imgIds = img_ids
        coco_eval.params.catIds = cat_ids
        coco_eval.params.maxDets = [1, 10, max([100] + list(per_image.values()))]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        # [IoU thresholds, recall points, classes, area ranges, max dets]; area 'all', the
        # largest detection limit; -1 where a class has no ground truth.
        precision = coco_eval.eval['precision'][:, :, :, 0, -1]
        iou_50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
        iou_75 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.75)))
        per_class = {names[c]: (_mean_valid(precision[:, :, k]),
                                _mean_valid(precision[iou_50, :, k]))
                     for k, c in enumerate(cat_ids)}
        evaluation.runs[run_name] = CocoMap(
            _mean_valid(precision), _mean_valid(precision[iou_50]),
            _mean_valid(precision[iou_75]), per_class, len(dets))
    return evaluation

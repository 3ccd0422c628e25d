"""Recall and precision of detections against COCO ground truth (one image, IoU matching)."""
import json
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ..core.geometry import box_iou
from .detections import Detections


def load_coco_ground_truth(ann_file: str, file_name: str,
                           class_names: Optional[Sequence[str]] = None
                           ) -> Tuple[np.ndarray, np.ndarray]:
    """Ground-truth boxes (xyxy) and 0-based labels of one image of a COCO file.

    Labels follow ``class_names`` by category name when given, else the category ids in
    ascending order.
    """
    with open(ann_file, encoding='utf-8') as f:
        coco = json.load(f)
    images = [im for im in coco['images'] if im['file_name'] == file_name]
    if not images:
        raise ValueError(f'{file_name} is not an image of {ann_file}')
    cats = sorted(coco['categories'], key=lambda c: c['id'])
    if class_names is not None:
        names = list(class_names)
        missing = [c['name'] for c in cats if c['name'] not in names]
        if missing:
            raise ValueError(f'categories {missing} of {ann_file} are not model classes {names}')
        cat_to_label = {c['id']: names.index(c['name']) for c in cats}
    else:
        cat_to_label = {c['id']: i for i, c in enumerate(cats)}
    anns = [a for a in coco['annotations'] if a['image_id'] == images[0]['id']]
    boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                       a['bbox'][1] + a['bbox'][3]] for a in anns], np.float64).reshape(-1, 4)
    labels = np.array([cat_to_label[a['category_id']] for a in anns], np.int64)
    return boxes, labels


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
    taken = np.zeros(len(gt_boxes), bool)
    tp = dup = bg = 0
    for i in np.argsort(-dets.scores, kind='stable'):
        overlaps = iou[i] >= iou_thr
        candidates = overlaps & ~taken
        if class_aware:
            candidates &= gt_labels == dets.labels[i]
        if candidates.any():
            taken[np.flatnonzero(candidates)[np.argmax(iou[i][candidates])]] = True
            tp += 1
        elif overlaps.any():
            dup += 1
        else:
            bg += 1
    return MatchStats(tp, dup, bg, int((~taken).sum()))


def matched_fraction(ref: Detections, other: Detections, iou_thr: float = 0.95) -> float:
    """Share of ``ref`` boxes with a one-to-one partner in ``other`` of the same label at
    IoU >= ``iou_thr`` (how far two runs agree; 1.0 when both are empty)."""
    if len(ref) == 0:
        return 1.0 if len(other) == 0 else 0.0
    iou = box_iou(ref.bboxes, other.bboxes)
    iou[ref.labels[:, None] != other.labels[None, :]] = 0
    taken = np.zeros(len(other), bool)
    hits = 0
    for i in np.argsort(-ref.scores, kind='stable'):
        free = np.where(taken, -1.0, iou[i])
        if len(free) and free.max() >= iou_thr:
            taken[int(free.argmax())] = True
            hits += 1
    return hits / len(ref)

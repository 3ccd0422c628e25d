"""Merging the boxes of overlapping slices: sahi's choices on plain arrays, plus soft-NMS.

``nms``, ``nmm`` and ``greedynmm`` pick what to keep/merge with sahi's own array functions
(``sahi.postprocess.combine``) and merge exactly as sahi's ``NMMPostprocess`` does (union box,
max score, label of the higher-scored box, the match re-checked against the growing box), so
the tool and ``sahi.predict.get_sliced_prediction`` give the same boxes; without building one
Python object per box. ``soft_nms`` is mmcv's (MMYOLO's demo offers it; IoU only).

Rotated boxes (RTMDet-R) merge by NMS on their rotated IoU only (mmcv's ``nms_rotated``, the
NMS of the rotated head itself): a union box of rotated boxes (``nmm``) is not a rotated box,
and neither sahi nor mmcv's soft-NMS take rotated boxes; :func:`check_merge_for` says so
before any slice runs.

A class-wise merge (sahi's default, MMYOLO's demo's only mode) never merges boxes of different
labels, so one object predicted as 'square' in one slice and 'triangle' in the next stays twice;
``class_agnostic=True`` merges across labels.
"""
import importlib.util
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from ..core.checks import check_number
from ..core.geometry import box_iou
from .detections import Detections

MERGE_METHODS = ('nms', 'soft_nms', 'nmm', 'greedynmm')
MATCH_METRICS = ('IOU', 'IOS')
_ALIASES = {'greedy_nmm': 'greedynmm', 'softnms': 'soft_nms', 'soft-nms': 'soft_nms'}


@dataclass(frozen=True)
class MergeConfig:
    """How the boxes of all slices become one set.

    Args:
        method (str): One of ``nms``, ``soft_nms``, ``nmm``, ``greedynmm`` (case-insensitive).
            Defaults to 'nms'.
        metric (str): ``IOU`` or ``IOS`` (intersection over the smaller box). Defaults to 'IOU'.
        threshold (float): Overlap from which boxes are suppressed/merged, in [0, 1].
            Defaults to 0.25 (MMYOLO's demo).
        class_agnostic (bool): Merge boxes of different labels too. Defaults to False.
    """
    method: str = 'nms'
    metric: str = 'IOU'
    threshold: float = 0.25
    class_agnostic: bool = False

    def __post_init__(self):
        method = str(self.method).lower()
        method = _ALIASES.get(method, method)
        if method not in MERGE_METHODS:
            raise ValueError(f'merge method must be one of {MERGE_METHODS}, got {self.method!r}')
        metric = str(self.metric).upper()
        if metric not in MATCH_METRICS:
            raise ValueError(f'merge metric must be one of {MATCH_METRICS}, got {self.metric!r}')
        if method == 'soft_nms' and metric != 'IOU':
            raise ValueError('soft_nms matches by IOU only; use metric IOU or method nms/nmm/'
                             'greedynmm for IOS')
        object.__setattr__(self, 'method', method)
        object.__setattr__(self, 'metric', metric)
        object.__setattr__(self, 'threshold', check_number('merge threshold', self.threshold,
                                                           0, 1))

    @property
    def sahi_postprocess_type(self) -> str:
        """The name sahi's ``get_sliced_prediction(postprocess_type=...)`` uses."""
        if self.method == 'soft_nms':
            raise ValueError('sahi has no soft_nms postprocess')
        return self.method.upper()


def _overlap(box: np.ndarray, other: np.ndarray, metric: str) -> float:
    """sahi's ``calculate_bbox_iou`` / ``calculate_bbox_ios`` on float64 boxes."""
    return float(box_iou(box, other, metric.lower())[0, 0])


def _apply_merges(preds: np.ndarray, keep_to_merge: Dict[int, List[int]], metric: str,
                  threshold: float) -> Detections:
    """sahi's ``_apply_merge`` + ``merge_object_prediction_pair`` on arrays."""
    boxes, scores, labels = preds[:, :4].astype(np.float64), preds[:, 4].astype(np.float64), \
        preds[:, 5].astype(np.int64)
    out_boxes, out_scores, out_labels = [], [], []
    for keep, merge_list in keep_to_merge.items():
        box, score, label = boxes[keep].copy(), scores[keep], labels[keep]
        for idx in merge_list:
            if _overlap(box, boxes[idx], metric) >= threshold:
                label = label if score > scores[idx] else labels[idx]
                score = max(score, scores[idx])
                box = np.concatenate([np.minimum(box[:2], boxes[idx, :2]),
                                      np.maximum(box[2:], boxes[idx, 2:])])
        out_boxes.append(box)
        out_scores.append(score)
        out_labels.append(label)
    return Detections(np.asarray(out_boxes), np.asarray(out_scores), np.asarray(out_labels))


def _mmcv_nms(dets: Detections, merge: MergeConfig, nms_type: str):
    """``mmcv.ops.batched_nms`` of ``nms_type`` (class-wise unless ``class_agnostic``):
    its ``(dets, keep)`` as tensors."""
    import torch
    from mmcv.ops import batched_nms
    return batched_nms(
        torch.from_numpy(dets.bboxes), torch.from_numpy(dets.scores),
        torch.from_numpy(dets.labels),
        dict(type=nms_type, iou_threshold=merge.threshold, class_agnostic=merge.class_agnostic))


def _soft_nms(dets: Detections, merge: MergeConfig) -> Detections:
    """mmcv's soft-NMS (linear decay): boxes are kept, lower-scored overlapping ones decay."""
    out, keep = _mmcv_nms(dets, merge, 'soft_nms')
    return Detections(out[:, :4].numpy(), out[:, 4].numpy(), dets.labels[keep.numpy()])


def check_merge_for(merge: MergeConfig, box_dim: int) -> None:
    """Raises ValueError when ``merge`` cannot merge boxes of ``box_dim`` columns here
    (rotated boxes: class-wise or class-agnostic NMS on IOU only), or needs sahi (nms, nmm
    and greedynmm of axis-aligned boxes) and sahi is not installed."""
    if box_dim == 5:
        if merge.method != 'nms' or merge.metric != 'IOU':
            raise ValueError(f'rotated boxes merge by NMS on their rotated IoU only (method '
                             f'nms, metric IOU), not {merge.method} with {merge.metric}')
        return
    if merge.method != 'soft_nms' and importlib.util.find_spec('sahi') is None:
        raise ValueError(f'merging slices with {merge.method} uses sahi\'s postprocess, and '
                         f'sahi is not installed: pip install "sahi>=0.12,<0.13" (the '
                         f'[sliced] extra of mmyolo_vis_hooks), or merge with soft_nms')


def _rotated_nms(dets: Detections, merge: MergeConfig) -> Detections:
    """mmcv's rotated NMS (class-wise unless ``class_agnostic``), as the rotated head's."""
    return dets.select(_mmcv_nms(dets, merge, 'nms_rotated')[1].numpy())


def merge_detections(dets: Detections, merge: MergeConfig) -> Detections:
    """One set of boxes from the overlapping boxes of all slices (sorted by score)."""
    check_merge_for(merge, dets.bboxes.shape[1])
    if len(dets) == 0:
        return Detections.empty(dets.bboxes.shape[1])
    if dets.rotated:
        merged = _rotated_nms(dets, merge)
    elif merge.method == 'soft_nms':
        merged = _soft_nms(dets, merge)
    else:
        from sahi.postprocess import combine
        preds = dets.as_array()
        if merge.class_agnostic:
            func = {'nms': combine.nms, 'nmm': combine.nmm, 'greedynmm': combine.greedy_nmm}
        else:
            func = {'nms': combine.batched_nms, 'nmm': combine.batched_nmm,
                    'greedynmm': combine.batched_greedy_nmm}
        kept = func[merge.method](preds, match_metric=merge.metric,
                                  match_threshold=merge.threshold)
        if merge.method == 'nms':
            merged = dets.select(np.asarray(kept, dtype=np.int64))
        else:
            merged = _apply_merges(preds, kept, merge.metric, merge.threshold)
    return merged.select(np.argsort(-merged.scores, kind='stable'))

"""Differentiable "flat predictions" of MMYOLO's dense heads, and the choice of boxes to explain.

Every supported head returns, in eval mode, per-level ``(cls_scores, bbox_preds[,
objectnesses])`` and decodes them like ``YOLOv5Head.predict_by_feat``: priors from
``prior_generator``, boxes from ``bbox_coder``, confidence ``sigmoid(cls)`` times
``sigmoid(obj)`` when the head has an objectness branch (YOLOv5, YOLOv7, YOLOX). Here that
decoding is kept differentiable and unfiltered: one score per (prior, class), so that a chosen
box's target is its OWN class score at the prior that produced it.

The head's eval mode matters: YOLOv6, YOLOv8 and PPYOLOE heads return the distribution logits as
a third output in training mode only, so the head must run in eval mode (the CAM engine runs the
model in eval mode and restores the modes afterwards).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Exact head classes (not subclasses: the instance-segmentation, rotated and pose heads subclass
# these but return more outputs or other box encodings).
SUPPORTED_HEADS: Dict[str, str] = {
    'YOLOv5Head': 'yolov5',
    'YOLOv6Head': 'yolov6',
    'YOLOv7Head': 'yolov7',
    'YOLOv8Head': 'yolov8',
    'YOLOXHead': 'yolox',
    'RTMDetHead': 'rtmdet',
    'PPYOLOEHead': 'ppyoloe',
}


def detector_family(model: nn.Module) -> str:
    """The family name of a supported MMYOLO detector (``'yolov5'``, ``'rtmdet'``, ...).

    Raises:
        ValueError: The model has no ``bbox_head`` or its head type is not supported.
    """
    head = getattr(model, 'bbox_head', None)
    if head is None or not hasattr(model, 'extract_feat'):
        raise ValueError(f'box CAMs need a single-stage MMYOLO detector with extract_feat and '
                         f'bbox_head; got {type(model).__name__}')
    name = type(head).__name__
    if name not in SUPPORTED_HEADS:
        raise ValueError(f'box CAMs do not support the head {name}; supported heads: '
                         f'{", ".join(SUPPORTED_HEADS)}')
    return SUPPORTED_HEADS[name]


@dataclass
class FlatPredictions:
    """All candidate predictions of a batch, before any threshold or NMS.

    Attributes:
        scores (Tensor): ``(B, N, num_classes)`` confidences in [0, 1] (the values the head's
            own ``predict_by_feat`` thresholds and sorts), differentiable.
        log_scores (Tensor): ``(B, N, num_classes)`` their logarithms computed stably from the
            logits (``logsigmoid``). In float32 ``sigmoid`` rounds to 1 for logits above ~17
            and its gradient to 0; ``score * grad(log_score)`` is the same gradient without
            that underflow.
        boxes (Tensor): ``(B, N, 4)`` xyxy boxes in network-input pixels.
        levels (Tensor): ``(N,)`` feature level of each prior.
    """
    scores: Tensor
    log_scores: Tensor
    boxes: Tensor
    levels: Tensor


def flat_predictions(head: nn.Module, head_outputs: Sequence[List[Tensor]]) -> FlatPredictions:
    """Decodes a supported head's eval-mode outputs into :class:`FlatPredictions`.

    The prior order is the one of ``YOLOv5Head.predict_by_feat`` (level, then row, column,
    base prior), so a prior index addresses the same prediction there.
    """
    if len(head_outputs) not in (2, 3):
        raise ValueError(f'{type(head).__name__} returned {len(head_outputs)} outputs; an '
                         f'eval-mode dense head returns (cls, bbox[, objectness]). Is the head '
                         f'in training mode?')
    cls_scores, bbox_preds = head_outputs[0], head_outputs[1]
    objectnesses = head_outputs[2] if len(head_outputs) == 3 else None
    num_imgs = cls_scores[0].shape[0]
    num_classes = head.num_classes
    featmap_sizes = [c.shape[2:] for c in cls_scores]
    # grid_priors is pure; predict_by_feat's cached self.mlvl_priors is left alone.
    mlvl_priors = head.prior_generator.grid_priors(
        featmap_sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
    num_base = head.num_base_priors
    counts = [size.numel() * num_base for size in featmap_sizes]
    strides = torch.cat([
        mlvl_priors[0].new_full((n, ), stride) for n, stride in zip(counts, head.featmap_strides)
    ])
    levels = torch.cat([
        torch.full((n, ), level, dtype=torch.long, device=cls_scores[0].device)
        for level, n in enumerate(counts)
    ])
    cls_logits = torch.cat([
        c.permute(0, 2, 3, 1).reshape(num_imgs, -1, num_classes) for c in cls_scores
    ], dim=1)
    scores = cls_logits.sigmoid()
    log_scores = F.logsigmoid(cls_logits)
    if objectnesses is not None:
        obj_logits = torch.cat(
            [o.permute(0, 2, 3, 1).reshape(num_imgs, -1) for o in objectnesses], dim=1)
        scores = scores * obj_logits.sigmoid()[..., None]
        log_scores = log_scores + F.logsigmoid(obj_logits)[..., None]
    flat_bbox = torch.cat([b.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for b in bbox_preds],
                          dim=1)
    boxes = head.bbox_coder.decode(torch.cat(mlvl_priors)[None], flat_bbox, strides)
    return FlatPredictions(scores=scores, log_scores=log_scores, boxes=boxes, levels=levels)


@dataclass
class Detections:
    """The boxes chosen in one image, each tied to the prediction that produced it.

    Attributes:
        boxes (Tensor): ``(K, 4)`` xyxy in network-input pixels.
        scores (Tensor): ``(K, )`` confidences.
        labels (Tensor): ``(K, )`` class indices.
        priors (Tensor): ``(K, )`` prior index into :class:`FlatPredictions` (the target of a
            box is ``scores[image, prior, label]``).
        levels (Tensor): ``(K, )`` feature level of each box's prior.
    """
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    priors: Tensor
    levels: Tensor

    def __len__(self) -> int:
        return int(self.scores.numel())


def select_boxes(preds: FlatPredictions, test_cfg, score_thr: float,
                 topk: int) -> List[Detections]:
    """Per image: candidates above ``score_thr``, the head's NMS, then the ``topk`` best.

    Mirrors ``predict_by_feat``: multi-label candidates when ``test_cfg.multi_label`` (and more
    than one class), at most ``test_cfg.nms_pre`` candidates, class-wise NMS with
    ``test_cfg.nms``. ``topk <= 0`` keeps every box.
    """
    from mmcv.ops import batched_nms
    cfg = test_cfg or {}
    scores_all = preds.scores.detach()
    boxes_all = preds.boxes.detach()
    num_classes = scores_all.shape[-1]
    multi_label = bool(cfg.get('multi_label', False)) and num_classes > 1
    nms_pre = int(cfg.get('nms_pre', 30000) or 30000)
    nms_cfg = dict(cfg.get('nms') or dict(type='nms', iou_threshold=0.65))
    out = []
    for scores, boxes in zip(scores_all, boxes_all):
        if multi_label:
            mask = scores > score_thr
            flat = scores[mask]
            prior_idx, labels = mask.nonzero(as_tuple=True)
        else:
            flat, labels = scores.max(dim=1)
            keep = flat > score_thr
            flat, labels = flat[keep], labels[keep]
            prior_idx = keep.nonzero(as_tuple=True)[0]
        order = flat.argsort(descending=True)[:nms_pre]
        flat, labels, prior_idx = flat[order], labels[order], prior_idx[order]
        if flat.numel():
            _, keep = batched_nms(boxes[prior_idx], flat, labels, nms_cfg)
            if topk > 0:
                keep = keep[:topk]
            flat, labels, prior_idx = flat[keep], labels[keep], prior_idx[keep]
        out.append(Detections(boxes=boxes[prior_idx], scores=flat, labels=labels,
                              priors=prior_idx, levels=preds.levels[prior_idx]))
    return out


def box_iou(boxes: Tensor, box: Tensor) -> Tensor:
    """IoU of ``(..., 4)`` xyxy boxes with one ``(4, )`` box."""
    lt = torch.maximum(boxes[..., :2], box[:2])
    rb = torch.minimum(boxes[..., 2:], box[2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    area_box = (box[2:] - box[:2]).clamp(min=0).prod()
    return inter / (area + area_box - inter).clamp(min=1e-6)


def matched_log_scores(preds: FlatPredictions, dets: Detections, candidate_thr: float,
                       match_iou_thr: float) -> Tensor:
    """Target scores for gradient-free methods: per perturbed copy and box, the (log) score of
    the best IoU-matched prediction of the box's class.

    Args:
        preds (FlatPredictions): Predictions of ``n`` perturbed copies of ONE image.
        dets (Detections): The ``K`` boxes being explained.
        candidate_thr (float): A prior counts as a prediction of class c when its class-c score
            exceeds this (the head's own candidate threshold, ``test_cfg.score_thr``).
        match_iou_thr (float): Minimum IoU with the explained box; below it the box is lost
            and its score is 0.

    Returns:
        Tensor: ``(n, K)`` log scores; ``-inf`` where the box is lost.
    """
    n = preds.scores.shape[0]
    out = preds.log_scores.new_full((n, len(dets)), float('-inf'))
    for k in range(len(dets)):
        label = dets.labels[k]
        ious = box_iou(preds.boxes, dets.boxes[k])
        valid = (preds.scores[:, :, label] > candidate_thr) & (ious >= match_iou_thr)
        best = torch.where(valid, ious, ious.new_full((), -1.0)).argmax(dim=1, keepdim=True)
        found = valid.gather(1, best)[:, 0]
        log_scores = preds.log_scores[:, :, label].gather(1, best)[:, 0]
        out[:, k] = torch.where(found, log_scores, out[:, k])
    return out


def test_cfg_of(head: nn.Module) -> Optional[dict]:
    return getattr(head, 'test_cfg', None)

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

from ..core.geometry import box_iou

# MMYOLO's head classes (``mmyolo.models.dense_heads``) by name -> family. Recognised by the
# class itself, exactly: MMDetection's own ``YOLOXHead`` and ``RTMDetHead`` share these names
# but return and decode other outputs, and MMYOLO's instance-segmentation, rotated and pose
# heads subclass these but return more outputs or other box encodings.
SUPPORTED_HEADS: Dict[str, str] = {
    'YOLOv5Head': 'yolov5',
    'YOLOv6Head': 'yolov6',
    'YOLOv7Head': 'yolov7',
    'YOLOv8Head': 'yolov8',
    'YOLOXHead': 'yolox',
    'RTMDetHead': 'rtmdet',
    'PPYOLOEHead': 'ppyoloe',
}


def _qualified_name(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'


def detector_family(model: nn.Module) -> str:
    """The family name of a supported MMYOLO detector (``'yolov5'``, ``'rtmdet'``, ...).

    The head must be an instance of one of MMYOLO's head classes listed in
    :data:`SUPPORTED_HEADS` itself, not of a subclass or of a namesake from another package.

    Raises:
        ValueError: The model has no ``bbox_head`` or its head type is not supported.
    """
    head = getattr(model, 'bbox_head', None)
    if head is None or not hasattr(model, 'extract_feat'):
        raise ValueError(f'box CAMs need a single-stage MMYOLO detector with extract_feat and '
                         f'bbox_head; got {type(model).__name__}')
    from mmyolo.models import dense_heads  # imported here: it pulls in mmdet's models
    supported = {getattr(dense_heads, name): family for name, family in SUPPORTED_HEADS.items()}
    kind = type(head)
    if kind in supported:
        return supported[kind]
    accepted = ', '.join(SUPPORTED_HEADS)
    namesake = next((cls for cls in supported if cls.__name__ == kind.__name__), None)
    if namesake is not None:
        why = (f'{_qualified_name(kind)} is not MMYOLO\'s {_qualified_name(namesake)} (same '
               f'name, other outputs and box decoding): build the detector from an MMYOLO '
               f'config')
    else:
        bases = [cls for cls in kind.__mro__ if cls in supported]  # nearest first
        why = (f'{_qualified_name(kind)} subclasses {bases[0].__name__}, but a subclass may '
               f'return more outputs (masks, keypoints) or other box encodings' if bases
               else f'{_qualified_name(kind)} is not one of them')
    raise ValueError(f'box CAMs support exactly MMYOLO\'s heads (mmyolo.models.dense_heads): '
                     f'{accepted}; {why}')


@dataclass
class FlatPredictions:
    """All candidate predictions of a batch, before any threshold or NMS.

    Attributes:
        scores (Tensor): ``(B, N, num_classes)`` confidences in [0, 1] (the values the head's
            own ``predict_by_feat`` thresholds and sorts), differentiable.
        log_scores (Tensor): ``(B, N, num_classes)`` their logarithms computed stably from the
            logits (``logsigmoid``). In float32 ``sigmoid`` rounds to 1 for logits above ~17
            and its gradient to 0; ``score * grad(log_score)`` is the same gradient without
            that underflow up to logits of ~87 (``grad(log_score)`` is ``sigmoid(-logit)``:
            subnormal above ~87, exactly 0 above ~104).
        logits (Tensor): ``(B, N, num_classes)`` the sum of the logits behind each score: the
            class logit, plus the prior's objectness logit for heads with objectness (YOLOv5,
            YOLOv7, YOLOX). Its gradient has no saturating function at the end, so it does not
            underflow however confident the box.
        boxes (Tensor): ``(B, N, 4)`` xyxy boxes in network-input pixels.
        levels (Tensor): ``(N,)`` feature level of each prior.
        objectness (Tensor, optional): ``(B, N)`` objectness probability of each prior for
            heads with an objectness branch (YOLOv5, YOLOv7, YOLOX), else None. ``scores`` already
            include it (D-RISE weighs it separately).
    """
    scores: Tensor
    log_scores: Tensor
    logits: Tensor
    boxes: Tensor
    levels: Tensor
    objectness: Optional[Tensor] = None


def level_predictions(head: nn.Module, head_outputs: Sequence[List[Tensor]],
                      classes: Optional[Tensor] = None) -> List[FlatPredictions]:
    """Decodes a supported head's eval-mode outputs level by level.

    The levels are decoded independently, so their batch sizes may differ (a perturbed level
    can be decoded for ``n`` copies while the unchanged ones stay at one).

    Args:
        head (nn.Module): The detector's ``bbox_head``.
        head_outputs (Sequence[list[Tensor]]): ``head(feats)`` in eval mode.
        classes (Tensor, optional): Decode only these class columns (``scores[..., j]`` is then
            class ``classes[j]``). Defaults to None (all classes).

    Returns:
        list[FlatPredictions]: One per level; ``levels`` holds the level index.
    """
    if len(head_outputs) not in (2, 3):
        raise ValueError(f'{type(head).__name__} returned {len(head_outputs)} outputs; an '
                         f'eval-mode dense head returns (cls, bbox[, objectness]). Is the head '
                         f'in training mode?')
    cls_scores, bbox_preds = head_outputs[0], head_outputs[1]
    objectnesses = head_outputs[2] if len(head_outputs) == 3 else [None] * len(cls_scores)
    num_classes = head.num_classes
    device, dtype = cls_scores[0].device, cls_scores[0].dtype
    # grid_priors is pure; predict_by_feat's cached self.mlvl_priors is left alone.
    mlvl_priors = head.prior_generator.grid_priors([c.shape[2:] for c in cls_scores],
                                                   dtype=dtype, device=device)
    out = []
    for level, (cls, bbox, obj, priors, stride) in enumerate(
            zip(cls_scores, bbox_preds, objectnesses, mlvl_priors, head.featmap_strides)):
        batch = cls.shape[0]
        logits = cls.permute(0, 2, 3, 1).reshape(batch, -1, num_classes)
        if classes is not None:
            logits = logits[..., classes]
        scores = logits.sigmoid()
        log_scores = F.logsigmoid(logits)
        objectness = None
        if obj is not None:
            obj_logits = obj.permute(0, 2, 3, 1).reshape(batch, -1)
            objectness = obj_logits.sigmoid()
            scores = scores * obj_logits.sigmoid()[..., None]
            log_scores = log_scores + F.logsigmoid(obj_logits)[..., None]
            logits = logits + obj_logits[..., None]
        strides = priors.new_full((priors.shape[0], ), stride)
        boxes = head.bbox_coder.decode(priors[None], bbox.permute(0, 2, 3, 1).reshape(
            batch, -1, 4), strides)
        levels = torch.full((priors.shape[0], ), level, dtype=torch.long, device=device)
        out.append(FlatPredictions(scores=scores, log_scores=log_scores, logits=logits,
                                   boxes=boxes, levels=levels, objectness=objectness))
    return out


def flat_predictions(head: nn.Module, head_outputs: Sequence[List[Tensor]]) -> FlatPredictions:
    """Decodes a supported head's eval-mode outputs into :class:`FlatPredictions`.

    The prior order is the one of ``YOLOv5Head.predict_by_feat`` (level, then row, column,
    base prior), so a prior index addresses the same prediction there.
    """
    per_level = level_predictions(head, head_outputs)
    return FlatPredictions(
        scores=torch.cat([p.scores for p in per_level], dim=1),
        log_scores=torch.cat([p.log_scores for p in per_level], dim=1),
        logits=torch.cat([p.logits for p in per_level], dim=1),
        boxes=torch.cat([p.boxes for p in per_level], dim=1),
        levels=torch.cat([p.levels for p in per_level]),
        objectness=None if per_level[0].objectness is None else
        torch.cat([p.objectness for p in per_level], dim=1))


@dataclass
class ExplainedBoxes:
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
                 topk: int) -> List[ExplainedBoxes]:
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
        out.append(ExplainedBoxes(boxes=boxes[prior_idx], scores=flat, labels=labels,
                              priors=prior_idx, levels=preds.levels[prior_idx]))
    return out


def matched_log_scores(per_level: Sequence[FlatPredictions], dets: ExplainedBoxes,
                       candidate_thr: float, match_iou_thr: float) -> Tensor:
    """Target scores for gradient-free methods: per perturbed copy and box, the (log) score of
    the best IoU-matched prediction of the box's class.

    Args:
        per_level (Sequence[FlatPredictions]): Predictions of ONE image's perturbed copies,
            per level, decoded for the box labels only (``level_predictions(...,
            classes=dets.labels)``: column k is box k's class). A level's batch is ``n`` or 1
            (unchanged by the perturbation).
        dets (ExplainedBoxes): The ``K`` boxes being explained.
        candidate_thr (float): A prior counts as a prediction of the class when its score
            exceeds this (the head's own candidate threshold, ``test_cfg.score_thr``).
        match_iou_thr (float): Minimum IoU with the explained box; below it the box is lost.

    Returns:
        Tensor: ``(n, K)`` log scores; ``-inf`` where the box is lost.
    """
    n = max(p.scores.shape[0] for p in per_level)
    num_boxes = len(dets)
    best_iou = per_level[0].scores.new_full((n, num_boxes), -1.0)
    best_log = per_level[0].log_scores.new_full((n, num_boxes), float('-inf'))
    for preds in per_level:
        ious = box_iou(preds.boxes, dets.boxes)  # (n_l, N_l, K)
        valid = (preds.scores > candidate_thr) & (ious >= match_iou_thr)
        level_iou, where = torch.where(valid, ious, ious.new_full((), -1.0)).max(dim=1)
        level_log = preds.log_scores.gather(1, where[:, None, :])[:, 0]  # (n_l, K)
        level_iou, level_log = level_iou.expand(n, -1), level_log.expand(n, -1)
        better = level_iou > best_iou
        best_iou = torch.where(better, level_iou, best_iou)
        best_log = torch.where(better, level_log, best_log)
    return best_log

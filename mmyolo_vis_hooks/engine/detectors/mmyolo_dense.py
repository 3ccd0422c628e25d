"""MMYOLO's dense heads (YOLOv5, YOLOv6, YOLOv7, YOLOv8, YOLOX, RTMDet, PPYOLOE) and subclasses.

Every supported head returns, in eval mode, per-level ``(cls_scores, bbox_preds[,
objectnesses])`` and decodes them like ``YOLOv5Head.predict_by_feat``: priors from
``prior_generator``, boxes from ``bbox_coder``, confidence ``sigmoid(cls)`` times
``sigmoid(obj)`` when the head has an objectness branch (YOLOv5, YOLOv7, YOLOX). Here that
decoding is kept differentiable and unfiltered: one score per (prior, class), so that a chosen
box's target is its OWN class score at the prior that produced it.

The head's eval mode matters: YOLOv6, YOLOv8 and PPYOLOE heads return the distribution logits as
a third output in training mode only, so the head must run in eval mode (the consumers run the
model in eval mode and restore the modes afterwards).

MMYOLO's instance-segmentation, rotated and pose heads subclass these heads but return more
outputs or other box encodings: they have kinds of their own (``mmyolo_instance``, ``rotated``,
``pose``), and a head that replaces the decoding without one is refused in
``detectors/__init__.py``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from torch import Tensor, nn

from ..core.geometry import box_sizes
from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions,
                   decode_with_predict_by_feat, split_dense_outputs)

# The heads this kind explains (mmyolo.models.dense_heads), by class name.
HEAD_NAMES = ('YOLOv5Head', 'YOLOv6Head', 'YOLOv7Head', 'YOLOv8Head', 'YOLOXHead',
              'RTMDetHead', 'PPYOLOEHead')


def head_classes() -> Tuple[type, ...]:
    """MMYOLO's supported head classes (imported here: it pulls in mmdet's models)."""
    from mmyolo.models import dense_heads
    return tuple(getattr(dense_heads, name) for name in HEAD_NAMES)


def has_standard_decoding(head: nn.Module) -> bool:
    """Whether ``head`` decodes with ``YOLOv5Head.predict_by_feat`` (all 7 MMYOLO detection
    families do; instance/rotated/pose heads override it), which
    :func:`batched_predict_by_feat` reproduces."""
    from mmyolo.models.dense_heads import YOLOv5Head
    return getattr(type(head), 'predict_by_feat', None) is YOLOv5Head.predict_by_feat


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
    cls_scores, bbox_preds, objectnesses = split_dense_outputs(head, head_outputs, 'objectness')
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


def select_boxes(preds: FlatPredictions, test_cfg, score_thr: float, topk: int,
                 metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
    """Per image: candidates above ``score_thr``, the head's NMS, then the ``topk`` best.

    Mirrors ``predict_by_feat``: multi-label candidates when ``test_cfg.multi_label`` (and more
    than one class), at most ``test_cfg.nms_pre`` candidates, boxes no wider or taller than
    ``test_cfg.min_bbox_size`` (in original pixels: divided by each image's ``scale_factor``
    when ``metas`` are given) dropped when it is set, class-wise NMS with ``test_cfg.nms``.
    ``topk <= 0`` keeps every box.
    """
    from mmcv.ops import batched_nms
    cfg = test_cfg or {}
    scores_all = preds.scores.detach()
    boxes_all = preds.boxes.detach()
    num_classes = scores_all.shape[-1]
    multi_label = bool(cfg.get('multi_label', False)) and num_classes > 1
    nms_pre = int(cfg.get('nms_pre', 30000) or 30000)
    nms_cfg = dict(cfg.get('nms') or dict(type='nms', iou_threshold=0.65))
    min_size = cfg.get('min_bbox_size', -1)
    min_size = -1 if min_size is None else min_size
    out = []
    for b, (scores, boxes) in enumerate(zip(scores_all, boxes_all)):
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
        if min_size >= 0:  # as _bbox_post_process, on the boxes in original pixels
            scale = (1.0, 1.0) if metas is None else metas[b].get('scale_factor', (1.0, 1.0))
            widths, heights = box_sizes(boxes[prior_idx])
            wide = (widths / scale[0] > min_size) & (heights / scale[1] > min_size)
            flat, labels, prior_idx = flat[wide], labels[wide], prior_idx[wide]
        if flat.numel():
            _, keep = batched_nms(boxes[prior_idx], flat, labels, nms_cfg)
            if topk > 0:
                keep = keep[:topk]
            flat, labels, prior_idx = flat[keep], labels[keep], prior_idx[keep]
        out.append(ExplainedBoxes(boxes=boxes[prior_idx], scores=flat, labels=labels,
                              priors=prior_idx, levels=preds.levels[prior_idx]))
    return out


def _nms_keep(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
              nms_cfg: Optional[dict]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``mmcv.ops.batched_nms(boxes, scores, labels, nms_cfg)``'s kept indices and scores.

    For the plain ``nms`` type it computes the same class-offset boxes with the same float ops
    and calls the same C++ NMS directly, without batched_nms's per-call Python (its ``eval``,
    argument inspection and autograd Function cost ~6x the NMS itself on a slice's boxes);
    anything else goes through batched_nms itself.
    """
    from mmcv.ops import batched_nms
    from mmcv.ops.nms import ext_module
    cfg = dict(nms_cfg) if nms_cfg is not None else None
    plain = (cfg is not None and cfg.get('type', 'nms') == 'nms'
             and set(cfg) <= {'type', 'iou_threshold', 'iou_thr', 'offset', 'class_agnostic',
                              'split_thr'}
             and len(boxes) < cfg.get('split_thr', 10000))
    if not plain:
        dets, keep = batched_nms(boxes, scores, labels, cfg)
        return keep, dets[:, -1]
    if cfg.get('class_agnostic', False):
        boxes_for_nms = boxes
    else:
        offsets = labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
    iou_thr = cfg.get('iou_threshold', cfg.get('iou_thr'))
    keep = ext_module.nms(boxes_for_nms, scores, iou_threshold=float(iou_thr),
                          offset=int(cfg.get('offset', 0)))
    return keep, scores[keep]


def batched_predict_by_feat(head: torch.nn.Module, cls_scores: Sequence[torch.Tensor],
                            bbox_preds: Sequence[torch.Tensor],
                            objectnesses: Optional[Sequence[torch.Tensor]] = None, *,
                            batch_img_metas: List[dict], cfg: dict
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[int]]:
    """``YOLOv5Head.predict_by_feat(..., rescale=True, with_nms=True)`` for a whole batch,
    with the same boxes, scores and labels bit for bit (tested on several families) in the
    same order, as flat tensors.

    Why it is exact: every op that rounds (sigmoid, the box coder) runs, as in the original,
    once on the whole batch's tensors of the same shapes; after that only selections,
    comparisons and correctly rounded elementwise ops (products, differences, quotients,
    clamps), whose results do not depend on how many rows are processed together, are batched;
    the per-image sort and NMS (whose tie order depends on their input) run per image on the
    same values in the same order. What it saves is the per-image Python of the original
    (``InstanceData``, a deep copy of the config, mmcv's ``batched_nms`` wrapper): about 5x
    faster on a batch of 8 slices.

    Args:
        head (nn.Module): A head for which :func:`has_standard_decoding` holds.
        cls_scores, bbox_preds, objectnesses (Sequence[Tensor]): The head's outputs.
        batch_img_metas (list[dict]): Per image ``ori_shape``, ``scale_factor`` and
            optionally ``pad_param``.
        cfg (dict): The test config (``head.test_cfg`` with its score threshold).

    Returns:
        tuple: ``bboxes`` (K, 4), ``scores`` (K,), ``labels`` (K,) of all images, image after
        image, and the number of boxes of each image.
    """
    multi_label = bool(cfg.get('multi_label', False)) and head.num_classes > 1
    num_imgs = len(batch_img_metas)
    # --- as YOLOv5Head.predict_by_feat, on the whole batch (same ops, same shapes) ---
    featmap_sizes = [cls_score.shape[2:] for cls_score in cls_scores]
    if featmap_sizes != head.featmap_sizes:
        head.mlvl_priors = head.prior_generator.grid_priors(
            featmap_sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
        head.featmap_sizes = featmap_sizes
    flatten_priors = torch.cat(head.mlvl_priors)
    flatten_stride = torch.cat([
        flatten_priors.new_full((size.numel() * head.num_base_priors, ), stride)
        for size, stride in zip(featmap_sizes, head.featmap_strides)])
    flatten_cls_scores = torch.cat([
        s.permute(0, 2, 3, 1).reshape(num_imgs, -1, head.num_classes) for s in cls_scores],
        dim=1).sigmoid()
    flatten_bbox_preds = torch.cat([
        b.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for b in bbox_preds], dim=1)
    flatten_boxes = head.bbox_coder.decode(flatten_priors[None], flatten_bbox_preds,
                                           flatten_stride)
    score_thr = cfg.get('score_thr', -1)
    yolox_style = cfg.get('yolox_style', False)
    # --- per image in the original; here batched where that cannot change a bit ---
    if objectnesses is not None:
        objectness = torch.cat([o.permute(0, 2, 3, 1).reshape(num_imgs, -1)
                                for o in objectnesses], dim=1).sigmoid()
        if score_thr > 0 and not yolox_style:
            img_idx, prior_idx = (objectness > score_thr).nonzero(as_tuple=True)
        else:
            img_idx, prior_idx = torch.ones_like(objectness, dtype=torch.bool).nonzero(
                as_tuple=True)
        scores = flatten_cls_scores[img_idx, prior_idx] * objectness[img_idx, prior_idx, None]
    else:
        img_idx, prior_idx = torch.ones(flatten_cls_scores.shape[:2], dtype=torch.bool,
                                        device=flatten_cls_scores.device).nonzero(as_tuple=True)
        scores = flatten_cls_scores[img_idx, prior_idx]
    boxes = flatten_boxes[img_idx, prior_idx]
    # filter_scores_and_topk's mask and nonzero, for all images at once (row-major order
    # keeps each image's candidates together and in the original order).
    if multi_label:
        valid = scores > score_thr
        cand, labels = valid.nonzero(as_tuple=True)
        cand_scores = scores[valid]
    else:
        best, labels = scores.max(1, keepdim=True)
        valid = best > score_thr
        cand, _ = valid.nonzero(as_tuple=True)
        cand_scores = best[valid]
        labels = labels[:, 0][cand]
    cand_img = img_idx[cand]
    cand_boxes = boxes[cand]
    # rescale=True: pad and scale factor per candidate (one value per image, as the
    # original's new_tensor of the meta values, in the same float type).
    # (x - 0 is x, bit for bit, for an image without padding)
    if any('pad_param' in m for m in batch_img_metas):
        pads = cand_boxes.new_tensor([
            [m['pad_param'][2], m['pad_param'][0]] * 2 if 'pad_param' in m else [0.0] * 4
            for m in batch_img_metas])
        cand_boxes = cand_boxes - pads[cand_img]
    scales = cand_boxes.new_tensor([list(m['scale_factor']) * 2 for m in batch_img_metas])
    cand_boxes = cand_boxes / scales[cand_img]
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        wide = ((cand_boxes[:, 2] - cand_boxes[:, 0]) > min_size) & (
            (cand_boxes[:, 3] - cand_boxes[:, 1]) > min_size)
    counts = torch.bincount(cand_img, minlength=num_imgs).tolist()
    nms_pre = cfg.get('nms_pre', 100000)
    max_per_img = cfg.get('max_per_img')
    nms_cfg = cfg.get('nms')
    if isinstance(nms_cfg, ConfigDict):
        nms_cfg = nms_cfg.to_dict()
    out_index, out_scores, out_counts = [], [], []
    start = 0
    for img, count in enumerate(counts):
        stop = start + count
        if count == 0:
            out_counts.append(0)
            continue
        img_scores, order = cand_scores[start:stop].sort(descending=True)
        order = order[:min(nms_pre, count)] + start
        img_scores = img_scores[:len(order)]
        if min_size >= 0:
            keep_wide = wide[order]
            if not bool(keep_wide.all()):
                order, img_scores = order[keep_wide], img_scores[keep_wide]
        if len(order):
            keep, img_scores = _nms_keep(cand_boxes[order], img_scores, labels[order], nms_cfg)
            order = order[keep]
            if max_per_img is not None and not yolox_style:
                order, img_scores = order[:max_per_img], img_scores[:max_per_img]
        out_index.append(order)
        out_scores.append(img_scores)
        out_counts.append(len(order))
        start = stop
    if not out_index:
        empty = flatten_boxes.new_zeros((0, 4))
        return empty, empty[:, 0], labels.new_zeros(0), out_counts
    index = torch.cat(out_index)
    out_boxes = cand_boxes[index]
    out_img = cand_img[index]
    # clamp to each image's ori_shape (a clamp is exact, so one call when they agree)
    limits = torch.tensor([[m['ori_shape'][1], m['ori_shape'][0]] * 2
                           for m in batch_img_metas], dtype=out_boxes.dtype)
    out_boxes = torch.minimum(out_boxes.clamp_(min=0), limits.to(out_boxes.device)[out_img])
    return out_boxes, torch.cat(out_scores), labels[index], out_counts



class MMYOLODenseDetector(ExplainableDetector):
    """MMYOLO's single-stage detectors (``extract_feat`` + a dense ``bbox_head``)."""

    kind = 'MMYOLO dense head'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)

    @property
    def strides(self) -> List[int]:
        """The stride of each level, in network-input pixels."""
        return [s[0] if isinstance(s, (tuple, list)) else s for s in self.head.featmap_strides]

    def default_target_layers(self) -> List[str]:
        """``neck.out_layers[i]`` for every level of the neck.

        Raises:
            ValueError: The neck has no ``out_layers`` (pass target layers explicitly).
        """
        neck = getattr(self.model, 'neck', None)
        out_layers = getattr(neck, 'out_layers', None)
        if not isinstance(out_layers, nn.ModuleList) or not len(out_layers):
            raise ValueError(f'{type(neck).__name__} has no out_layers: pass target_layers '
                             f'explicitly (e.g. "neck", or "backbone.stage4")')
        return [f'neck.out_layers[{i}]' for i in range(len(out_layers))]

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        return level_predictions(self.head, self.head(tuple(feats)), classes=classes)

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        return select_boxes(preds, self.test_cfg, score_thr, topk, metas)

    def head_input_level(self, module: nn.Module, index: int, num_outputs: int
                         ) -> Optional[int]:
        """``i`` for ``neck.out_layers[i]`` (its output is head input ``i`` and feeds nothing
        else), and for output ``i`` of the whole neck."""
        neck = getattr(self.model, 'neck', None)
        if module is neck and num_outputs == len(self.strides):
            return index
        out_layers = getattr(neck, 'out_layers', None)
        if num_outputs != 1 or not isinstance(out_layers, nn.ModuleList):
            return None
        for level, layer in enumerate(out_layers):
            if layer is module:
                return level
        return None

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """:func:`batched_predict_by_feat` for the heads it reproduces bit for bit, else the
        head's own ``predict_by_feat``."""
        if cfg is not None and has_standard_decoding(self.head):
            return batched_predict_by_feat(self.head, *outs, batch_img_metas=metas, cfg=cfg)
        return self.decode_unbatched(outs, metas, cfg)

    def decode_unbatched(self, outs, metas: List[dict], cfg: dict
                         ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        return decode_with_predict_by_feat(self.head, outs, metas, cfg)


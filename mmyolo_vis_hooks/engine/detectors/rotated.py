"""MMYOLO's rotated-box head: RTMDet-R (``RTMDetRotatedHead``, through mmrotate 1.x).

The head is RTMDet's with one more output per level, the angle (``angle_coder.encode_size``
channels per prior), and ``predict_by_feat`` decodes ``(cx, cy, w, h, angle)`` boxes: the angle
through ``angle_coder.decode``, then the distances and angle through ``bbox_coder.decode`` at
each prior (``test_cfg.decode_with_angle``, the default), or the axis-aligned box first and the
angle beside it. Class scores are ``sigmoid(cls)``, with no objectness. Its post-processing is
YOLOv5Head's (multi-label candidates, ``nms_pre``) and then ``_bbox_post_process`` with the
config's rotated NMS (``nms_rotated``, class-wise through ``mmcv.ops.batched_nms``).

Here that decoding runs level by level, kept differentiable and unfiltered, so that a rotated
box's target is its own class score at its own prior, as for the axis-aligned kinds. Boxes are
``(..., 5)`` in mmrotate's ``RotatedBoxes`` convention; the geometry every consumer uses
(``engine.core.geometry``: overlaps, masks, moving boxes to the original image) takes them.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ExplainedBoxes, FlatPredictions, decode_with_predict_by_feat
from .mmyolo_dense import MMYOLODenseDetector, select_boxes

# The rotated heads this kind explains (mmyolo.models.dense_heads), by class name.
HEAD_NAMES = ('RTMDetRotatedHead', )


def head_classes() -> Tuple[type, ...]:
    """MMYOLO's supported rotated head classes (importing them needs no mmrotate; building
    one does)."""
    from mmyolo.models import dense_heads
    return tuple(getattr(dense_heads, name) for name in HEAD_NAMES)


def has_rotated_decoding(head: nn.Module) -> bool:
    """Whether ``head`` decodes with ``RTMDetRotatedHead.predict_by_feat``."""
    from mmyolo.models.dense_heads import RTMDetRotatedHead
    return getattr(type(head), 'predict_by_feat', None) is RTMDetRotatedHead.predict_by_feat


def rotated_level_predictions(head: nn.Module, head_outputs: Sequence[List[Tensor]],
                              classes: Optional[Tensor] = None,
                              decode_with_angle: bool = True) -> List[FlatPredictions]:
    """Decodes ``RTMDetRotatedHead``'s eval-mode outputs level by level, as its
    ``predict_by_feat`` does before any threshold (arguments as
    :func:`~.mmyolo_dense.level_predictions`; ``decode_with_angle`` is the test config's).

    Returns:
        list[FlatPredictions]: One per level, ``boxes`` ``(B, N, 5)`` in network-input pixels.
    """
    from mmdet.structures.bbox import HorizontalBoxes
    if len(head_outputs) != 3:
        raise ValueError(f'{type(head).__name__} returned {len(head_outputs)} outputs; its '
                         f'eval-mode forward returns (cls, bbox, angle). Is it in training mode?')
    cls_scores, bbox_preds, angle_preds = head_outputs
    device, dtype = cls_scores[0].device, cls_scores[0].dtype
    mlvl_priors = head.prior_generator.grid_priors([c.shape[2:] for c in cls_scores],
                                                   dtype=dtype, device=device)
    out = []
    for level, (cls, bbox, angle, priors, stride) in enumerate(
            zip(cls_scores, bbox_preds, angle_preds, mlvl_priors, head.featmap_strides)):
        batch = cls.shape[0]
        logits = cls.permute(0, 2, 3, 1).reshape(batch, -1, head.num_classes)
        if classes is not None:
            logits = logits[..., classes]
        distances = bbox.permute(0, 2, 3, 1).reshape(batch, -1, 4)
        angles = head.angle_coder.decode(
            angle.permute(0, 2, 3, 1).reshape(batch, -1, head.angle_out_dim), keepdim=True)
        strides = priors.new_full((priors.shape[0], ), stride)
        if decode_with_angle:
            boxes = head.bbox_coder.decode(priors[None], torch.cat([distances, angles], -1),
                                           strides)
        else:
            hboxes = head.bbox_coder.decode(priors[None], distances, strides)
            boxes = torch.cat([HorizontalBoxes.xyxy_to_cxcywh(hboxes), angles], dim=-1)
        levels = torch.full((priors.shape[0], ), level, dtype=torch.long, device=device)
        out.append(FlatPredictions(scores=logits.sigmoid(), log_scores=F.logsigmoid(logits),
                                   logits=logits, boxes=boxes, levels=levels))
    return out


class MMYOLORotatedDetector(MMYOLODenseDetector):
    """MMYOLO's RTMDet-R: the dense kind with rotated ``(cx, cy, w, h, angle)`` boxes."""

    kind = 'MMYOLO rotated head (RTMDet-R)'
    box_dim = 5

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        return rotated_level_predictions(
            self.head, self.head(tuple(feats)), classes=classes,
            decode_with_angle=bool(self.test_cfg.get('decode_with_angle', True)))

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """The head's post-processing (:func:`~.mmyolo_dense.select_boxes` with the config's
        rotated NMS, which ``mmcv.ops.batched_nms`` runs class-wise on 5-column boxes)."""
        return select_boxes(preds, self.test_cfg, score_thr, topk, metas)

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The head's own ``predict_by_feat``, rotated boxes as ``(K, 5)`` tensors."""
        return decode_with_predict_by_feat(self.head, outs, metas, cfg)

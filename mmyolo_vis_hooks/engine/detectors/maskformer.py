"""MMDetection's MaskFormer and Mask2Former with instance results (``test_cfg.instance_on``).

How MMDetection predicts (``MaskFormer.predict``): ``extract_feat`` (the backbone), then the
``panoptic_head``'s ``predict`` (its pixel decoder and transformer decoder; every query a class
distribution with a background column and a mask; the last decoder layer's masks upsampled,
bilinear, to ``batch_input_shape``), then ``MaskFormerFusionHead.predict``, which crops each
image's masks to its ``img_shape`` and, for instances, runs ``instance_postprocess``: class
scores ``softmax(cls)[:, :-1]``, the ``max_per_image`` best (query, class) pairs over ALL
classes, the "thing" classes among them kept, a mask ``mask_pred > 0``, its score
``mean(sigmoid(mask_pred))`` over the mask, a detection score ``class score * mask score`` and
the box ``mask2bbox`` of the mask. No NMS, no score threshold.

Here the candidates are the queries: ``class_scores`` the softmax (without the background
column), ``score_factors`` each query's mask score, ``scores`` their product (a detection's
score), ``logits`` the class logit (the mask score has no logit of its own), ``boxes`` the
extent of the query's mask in network-input pixels. A box's gradient CAM explains its query's
class logit (``target='logit'``) or the log of its detection score (``'log_score'``: class and
mask score) at the last decoder layer. The selection is ``instance_postprocess``'s own (top-k
on the class scores, things only), each detection with its mask. Re-scoring after a change
runs the whole model again and finds the query that now holds the box by IoU, as for DETRs.
The pixel decoder mixes the feature levels, so every perturbation runs it whole.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, above_score_thr,
                   decode_by_predict, explained_boxes, samples_of, uses_deformable_attention)


def has_maskformer_instances(model: nn.Module) -> bool:
    """Whether ``model`` is a MaskFormer/Mask2Former whose fusion head gives instances with
    ``MaskFormerFusionHead``'s own ``predict`` and ``instance_postprocess``."""
    from mmdet.models.detectors import MaskFormer
    from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
    fusion = getattr(model, 'panoptic_fusion_head', None)
    if not isinstance(model, MaskFormer) or not isinstance(fusion, MaskFormerFusionHead):
        return False
    return (type(fusion).predict is MaskFormerFusionHead.predict
            and type(fusion).instance_postprocess is MaskFormerFusionHead.instance_postprocess
            and bool((fusion.test_cfg or {}).get('instance_on', False)))


def mask_boxes(masks: Tensor) -> Tensor:
    """``(..., H, W)`` bool masks -> ``(..., 4)`` xyxy extents (MMDetection's ``mask2bbox``:
    the last row and column plus one; zeros for an empty mask)."""
    from mmdet.structures.mask import mask2bbox
    shape = masks.shape[:-2]
    return mask2bbox(masks.flatten(0, -3)).to(torch.float32).reshape(*shape, 4)


class MaskFormerDetector(ExplainableDetector):
    """MMDetection's MaskFormer and Mask2Former with ``test_cfg.instance_on``."""

    kind = 'MMDetection MaskFormer/Mask2Former (instances)'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.head = model.panoptic_fusion_head  # num_classes and test_cfg live here
        self.query_head = model.panoptic_head
        self.num_things = int(self.head.num_things_classes)
        # Mask2Former's pixel decoder: deformable attention, one backward pass a box
        self.batched_gradients = not uses_deformable_attention(model)

    @property
    def head_name(self) -> str:
        return type(self.query_head).__name__

    @property
    def predicts_masks(self) -> bool:
        return True

    @property
    def candidate_thr(self) -> float:
        """``instance_postprocess`` has no score threshold."""
        return 0.0

    def head_input_level(self, module: nn.Module, index: int, num_outputs: int
                         ) -> Optional[int]:
        return None  # the pixel decoder mixes the levels: a perturbation reruns everything

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        if metas is None:
            raise ValueError(f'{type(self.model).__name__} needs each image\'s metainfo '
                             f'(img_shape, batch_input_shape) to run its decoders')
        batch = max(f.shape[0] for f in feats)
        feats = tuple(f.expand(batch, *f.shape[1:]) if f.shape[0] != batch else f
                      for f in feats)
        metas = list(metas)
        if len(metas) != batch:  # n changed copies of one image
            metas = metas[:1] * batch
        cls_all, mask_all = self.query_head(feats, samples_of(metas))
        height, width = metas[0]['batch_input_shape']
        # the panoptic head's predict: the last layer, masks upsampled to the batch input
        cls = cls_all[-1]
        masks = F.interpolate(mask_all[-1], size=(height, width), mode='bilinear',
                              align_corners=False)
        # the fusion head's: each image's content only (img_shape), padding outside
        content = torch.zeros_like(masks[:, :1], dtype=torch.bool)
        for b, meta in enumerate(metas):
            h, w = meta['img_shape'][:2]
            content[b, :, :h, :w] = True
        binary = (masks > 0) & content
        mask_scores = (masks.sigmoid() * binary).flatten(2).sum(2) / (
            binary.flatten(2).sum(2) + 1e-6)
        class_scores = cls.softmax(-1)[..., :-1]
        logits, log_class = cls[..., :-1], cls.log_softmax(-1)[..., :-1]
        if classes is not None:
            class_scores, logits, log_class = (t[..., classes] for t in
                                               (class_scores, logits, log_class))
        scores = class_scores * mask_scores[..., None]
        log_scores = log_class + mask_scores.log()[..., None]
        levels = torch.zeros(cls.shape[1], dtype=torch.long, device=cls.device)
        return [FlatPredictions(scores=scores, log_scores=log_scores, logits=logits,
                                boxes=mask_boxes(binary), levels=levels,
                                score_factors=mask_scores, class_scores=class_scores,
                                mask_source=binary)]

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """``MaskFormerFusionHead.instance_postprocess``'s choice: the ``max_per_image`` best
        (query, class) pairs by class score, things only, scored by class times mask score;
        then, best first, the detections above ``score_thr``, the ``topk`` best (``<= 0``:
        all), each with its query's mask."""
        out = []
        num_queries, num_classes = preds.class_scores.shape[1:]
        max_per_image = min(int(self.test_cfg.get('max_per_image', 100)),
                            num_queries * num_classes)
        for b in range(preds.class_scores.shape[0]):
            top, index = preds.class_scores[b].detach().reshape(-1).topk(max_per_image)
            labels, queries = index % num_classes, index // num_classes
            thing = labels < self.num_things
            labels, queries = labels[thing], queries[thing]
            scores = top[thing] * preds.score_factors[b, queries].detach()
            scores, order = scores.sort(descending=True)
            labels, queries = labels[order], queries[order]
            det = explained_boxes(preds, b, scores, labels, queries, score_thr, topk)
            det.masks = preds.mask_source[b, det.priors]
            out.append(det)
        return out

    def forward(self, inputs: Tensor):
        """The preprocessed batch itself: the decoders need the metainfo."""
        return inputs

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """MMDetection's own ``predict`` with instance results only, the boxes at or below
        ``cfg['score_thr']`` dropped (the fusion head keeps its ``max_per_image`` best)."""
        cfg = dict(cfg, panoptic_on=False, semantic_on=False, instance_on=True)
        return above_score_thr(*decode_by_predict(self.model, self.head, outs, metas, cfg), cfg)

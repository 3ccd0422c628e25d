"""MMDetection's Sparse R-CNN and QueryInst (``SparseRCNN`` with an ``EmbeddingRPNHead`` and a
``SparseRoIHead``).

How MMDetection predicts (``TwoStageDetector.predict``): the ``EmbeddingRPNHead`` gives every
image the same learned proposals (normalised boxes scaled to its ``img_shape``) and proposal
features; each stage of the ``SparseRoIHead`` (``_bbox_forward``) pools the current boxes
(RoIAlign), its ``DIIHead`` updates the proposal features (dynamic convolution, attention
across the proposals) and returns per-proposal class logits and refined boxes, which the next
stage pools again (boxes detached between stages, proposal features not).
``SparseRoIHead.predict_bbox`` reads the LAST stage: the ``max_per_img`` best of the
``num_proposals x num_classes`` sigmoid scores (focal classification, as sigmoid DETR heads;
``index // num_classes`` is the proposal), their boxes the last stage's, no NMS and no
threshold. QueryInst's ``predict_mask`` then runs the last stage's mask head on every last-stage
proposal (with its attention features) and keeps the masks of the chosen (proposal, class)
pairs.

Here the candidates are the proposals after the last stage: ``scores`` the sigmoid,
``logits`` the class logit, ``boxes`` the last stage's box. A box's CAM explains its own
proposal's class logit at the last stage, through every stage (the proposal features carry
each stage's evidence forward); for QueryInst each detection also gets its mask from the RoI
head's own ``predict_mask``. Re-scoring after a change runs all stages again: the learned
proposals are fixed, their boxes are not, so the IoU match finds the proposal that now holds
the box.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   above_score_thr, default_metas, flat_results, pad_masks, samples_of)


def is_sparse_rcnn(model: nn.Module) -> bool:
    """Whether ``model`` proposes with an ``EmbeddingRPNHead`` into a ``SparseRoIHead``
    (Sparse R-CNN, QueryInst)."""
    from mmdet.models.dense_heads import EmbeddingRPNHead
    from mmdet.models.roi_heads import SparseRoIHead
    return isinstance(getattr(model, 'rpn_head', None), EmbeddingRPNHead) and \
        isinstance(getattr(model, 'roi_head', None), SparseRoIHead)


class SparseRCNNDetector(ExplainableDetector):
    """MMDetection's Sparse R-CNN and QueryInst, decoded by ``SparseRoIHead``'s own
    ``predict_bbox`` and ``predict_mask``.

    Args:
        model (nn.Module): The unwrapped detector.
    """

    kind = 'MMDetection Sparse R-CNN detector'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        from mmdet.models.roi_heads import SparseRoIHead
        self.roi_head = model.roi_head
        cls = type(self.roi_head)
        if cls.predict_bbox is not SparseRoIHead.predict_bbox or \
                cls._bbox_forward is not SparseRoIHead._bbox_forward:
            raise UnsupportedDetectorError(
                f'{type(model).__name__}\'s RoI head {cls.__name__} predicts boxes its own '
                f'way; Sparse R-CNN box CAMs support SparseRoIHead\'s own prediction')
        self.head = self.roi_head.bbox_head[-1]
        if not self.head.loss_cls.use_sigmoid:
            raise UnsupportedDetectorError(
                f'{type(model).__name__} classifies with a softmax; Sparse R-CNN box CAMs '
                f'support sigmoid (focal) classification, as its packaged configs use')

    @property
    def test_cfg(self) -> dict:
        return self.roi_head.test_cfg or {}

    @property
    def candidate_thr(self) -> float:
        """``SparseRoIHead.predict_bbox`` has no score threshold: every top-k pair is a
        detection."""
        return 0.0

    @property
    def head_name(self) -> str:
        return type(self.roi_head).__name__

    @property
    def predicts_masks(self) -> bool:
        """QueryInst: the RoI head's own ``predict_mask`` gives each detection its mask."""
        from mmdet.models.roi_heads import SparseRoIHead
        return bool(getattr(self.roi_head, 'with_mask', False)) and \
            type(self.roi_head).predict_mask is SparseRoIHead.predict_mask

    @property
    def _stride(self) -> int:
        """Stride of the finest level the RoI head pools from."""
        return int(self.roi_head.bbox_roi_extractor[0].featmap_strides[0])

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        from mmdet.structures.bbox import bbox2roi
        # levels given at batch 1 beside a changed level of n copies (AblationCAM's
        # re-scoring); mmcv's RoIAlign reads contiguous NCHW memory whatever the strides
        batch = max(f.shape[0] for f in feats)
        feats = tuple((f.expand(batch, *f.shape[1:]) if f.shape[0] != batch else f).contiguous()
                      for f in feats)
        if metas is None:
            metas = default_metas(batch, feats[0].shape[-2] * self._stride,
                                  feats[0].shape[-1] * self._stride)
        metas = list(metas)
        if len(metas) != batch:  # n changed copies of one image
            metas = metas[:1] * batch
        roi_head = self.roi_head
        # SparseRoIHead.predict_bbox's stages; the proposals are learned, not proposed
        rpn_results = self.model.rpn_head.predict(feats, samples_of(metas))
        boxes = [res.bboxes for res in rpn_results]
        object_feats = torch.cat([res.features[None] for res in rpn_results])
        for stage in range(roi_head.num_stages):
            results = roi_head._bbox_forward(stage, feats, bbox2roi(boxes), object_feats,
                                             metas)
            object_feats = results['object_feats']
            boxes = results['detached_proposals']
        cls = results['cls_score']  # (B, Q, C) at the last stage
        scores, log_scores, logits = cls.sigmoid(), F.logsigmoid(cls), cls
        if classes is not None:
            scores, log_scores, logits = scores[..., classes], log_scores[..., classes], \
                logits[..., classes]
        boxes = torch.stack(boxes)
        preds = FlatPredictions(
            scores=scores, log_scores=log_scores, logits=logits, boxes=boxes,
            levels=torch.zeros(boxes.shape[1], dtype=torch.long, device=boxes.device))
        if self.predicts_masks:  # the mask head pools every last-stage box from the levels
            preds.mask_source = (feats, results['attn_feats'])
        return [preds]

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """``SparseRoIHead.predict_bbox``'s choice of (proposal, class) pairs (its
        ``topk(max_per_img, sorted=False)`` of the flattened scores, here ordered best first);
        then the detections above ``score_thr``, the ``topk`` best (``<= 0``: all). QueryInst
        detections get their masks from the RoI head's own ``predict_mask`` (on the network
        input)."""
        out = []
        num_queries, num_classes = preds.scores.shape[1:]
        max_per_img = int(self.test_cfg.get('max_per_img', num_queries))
        for b in range(preds.scores.shape[0]):
            top, index = preds.scores[b].detach().flatten().topk(max_per_img, sorted=False)
            order = top.argsort(descending=True, stable=True)
            top, index = top[order], index[order]
            above = top > score_thr
            top, index = top[above], index[above]
            if topk > 0:
                top, index = top[:topk], index[:topk]
            queries = index // num_classes
            det = ExplainedBoxes(boxes=preds.boxes[b, queries].detach(), scores=top,
                                 labels=index % num_classes, priors=queries,
                                 levels=preds.levels[queries])
            if self.predicts_masks and preds.mask_source is not None:
                meta = None if metas is None else metas[b]
                det.masks = self._masks(preds, b, det, index, meta)
            out.append(det)
        return out

    def _masks(self, preds: FlatPredictions, b: int, det: ExplainedBoxes, index: Tensor,
               meta: Optional[dict]) -> Tensor:
        """``(K, H, W)`` masks of image ``b``'s detections on the network input:
        ``SparseRoIHead.predict_mask`` on the image's last-stage proposals, with the flat
        (proposal, class) indices of its detections, pasted at ``img_shape`` and padded."""
        from mmengine.structures import InstanceData
        feats, attn_feats = preds.mask_source
        height, width = feats[0].shape[-2] * self._stride, feats[0].shape[-1] * self._stride
        if meta is None:
            meta = default_metas(1, height, width)[0]
        size = tuple(meta.get('batch_input_shape') or (height, width))
        masks = torch.zeros((len(det), *size), dtype=torch.bool, device=det.boxes.device)
        # MMDetection's paste fails when every box lies wholly outside the image (the box coder
        # does not clip): such a box covers no pixel, so only the others are pasted (each mask
        # depends on its own box alone)
        img_h, img_w = meta.get('img_shape', size)[:2]
        boxes = det.boxes
        inside = (boxes[:, 0] < img_w) & (boxes[:, 1] < img_h) & (boxes[:, 2] > 0) & \
            (boxes[:, 3] > 0)
        if not inside.any():
            return masks
        instances = InstanceData(bboxes=boxes[inside].clone(), scores=det.scores[inside],
                                 labels=det.labels[inside], topk_inds=index[inside])
        # every proposal's box and attention features, as predict_bbox leaves them for
        # predict_mask (which pops them); InstanceData's setattr would refuse them when fewer
        # pairs than proposals are explained, set_field does not check lengths
        instances.set_field(preds.boxes[b].detach(), 'proposals')
        instances.set_field(attn_feats[min(b, attn_feats.shape[0] - 1)].detach(), 'attn_feats')
        with torch.no_grad():
            (result, ) = self.roi_head.predict_mask(
                tuple(f[min(b, f.shape[0] - 1)][None] for f in feats), [meta], [instances],
                rescale=False)
        masks[inside] = pad_masks(result.masks, size).to(masks.device)
        return masks

    def forward(self, inputs: Tensor):
        """The preprocessed batch itself: the proposals need each image's metainfo."""
        return inputs

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """MMDetection's own prediction of the batch ``outs`` given contiguous (RoIAlign):
        ``TwoStageDetector.predict``'s steps up to ``SparseRoIHead.predict_bbox`` (every stage,
        last-stage top-k, rescaled), with the boxes at or below ``cfg['score_thr']`` dropped
        (the RoI head keeps every top-k pair). QueryInst's masks are not computed: the boxes
        do not depend on them, and MMDetection's mask pasting fails on a box wholly outside
        the image (its box coder does not clip)."""
        from mmengine.config import ConfigDict
        feats = self.model.extract_feat(outs.contiguous())
        proposals = self.model.rpn_head.predict(feats, samples_of(metas))
        inst = self.roi_head.predict_bbox(feats, list(metas), proposals,
                                          rcnn_test_cfg=ConfigDict(cfg), rescale=True)
        return above_score_thr(*flat_results(inst), cfg)

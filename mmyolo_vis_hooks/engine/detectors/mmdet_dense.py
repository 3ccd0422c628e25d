"""MMDetection's dense one-stage heads that decode with ``BaseDenseHead``'s own post-processing.

That covers RetinaNet (and its FreeAnchor, PISA, GHM and SepBN variants), FCOS, NAS-FCOS, ATSS,
FSAF, AutoAssign, DDOD, VFNet, YOLOF, SSD, CenterNet-update and MMDetection's RTMDet: heads whose
``predict_by_feat`` and ``_predict_by_feat_single`` are ``BaseDenseHead``'s. Per level the head
returns ``(cls_scores, bbox_preds[, score_factors])``; ``_predict_by_feat_single`` turns the
class logits into scores (sigmoid, or softmax without the background column), keeps the
(prior, class) pairs above ``score_thr`` and the ``nms_pre`` best per level
(``filter_scores_and_topk``), decodes their boxes with ``bbox_coder.decode(priors, deltas,
max_shape=img_shape)``, multiplies the scores by ``sigmoid(score_factor)`` (FCOS/ATSS
centerness, DDOD IoU, AutoAssign objectness), then ``_bbox_post_process`` rescales, drops boxes
under ``min_bbox_size``, runs ``batched_nms`` and keeps ``max_per_img``.

Here the same pieces run on every prior (the head's ``prior_generator`` and ``bbox_coder``,
mmdet's ``filter_scores_and_topk``, ``scale_boxes`` and ``batched_nms``) with the graph kept,
and :meth:`MMDetDenseDetector.select` repeats the post-processing step by step while keeping
the prior and class of every detection. Heads that override that decoding (GFL, TOOD, PAA,
YOLOX, YOLOv3, CenterNet, RepPoints, FoveaBox, SABL, guided anchoring) are not this kind.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   decode_with_predict_by_feat, default_metas, split_dense_outputs)


def uses_base_decoding(head_cls: type) -> bool:
    """Whether a dense head class decodes with ``BaseDenseHead``'s own post-processing."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    return (issubclass(head_cls, BaseDenseHead)
            and head_cls.predict_by_feat is BaseDenseHead.predict_by_feat
            and head_cls._predict_by_feat_single is BaseDenseHead._predict_by_feat_single)


class MMDetDenseDetector(ExplainableDetector):
    """MMDetection's single-stage detectors whose dense head decodes like ``BaseDenseHead``."""

    kind = 'MMDetection dense head'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        # SSDHead has no loss_cls module (its loss is written out), so no custom activation
        if getattr(getattr(self.head, 'loss_cls', None), 'custom_cls_channels', False):
            raise UnsupportedDetectorError(
                f'{type(self.head).__name__} with {type(self.head.loss_cls).__name__} turns '
                f'logits into scores with its loss\'s own activation; box CAMs support sigmoid '
                f'and softmax classifiers')

    @property
    def selection_thr(self) -> float:
        """``test_cfg.score_thr``: ``filter_scores_and_topk`` keeps the candidates above it."""
        return float(self.test_cfg.get('score_thr', 0) or 0)

    @property
    def num_levels(self) -> int:
        return self.head.prior_generator.num_levels

    def head_input_level(self, module: nn.Module, index: int, num_outputs: int
                         ) -> Optional[int]:
        """Output ``i`` of the neck (or of a neck-less backbone) is head input ``i``."""
        if num_outputs != self.num_levels:
            return None
        return super().head_input_level(module, index, num_outputs)

    def _scores(self, cls: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """scores, log scores and logits of ``(..., cls_out_channels)`` class logits."""
        if self.head.use_sigmoid_cls:
            return cls.sigmoid(), F.logsigmoid(cls), cls
        # softmax heads (SSD): the last column is the background, as in _predict_by_feat_single
        return cls.softmax(-1)[..., :-1], cls.log_softmax(-1)[..., :-1], cls[..., :-1]

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        if metas is None:
            metas = default_metas(max(f.shape[0] for f in feats), *self._input_size(feats))
        return self._output_candidates(self.head(tuple(feats)), classes, metas)

    def _output_candidates(self, outputs, classes: Optional[Tensor],
                           metas: Sequence[dict]) -> List[FlatPredictions]:
        """The candidates of the head's outputs, per level."""
        head = self.head
        cls_scores, bbox_preds, factors = split_dense_outputs(head, outputs, 'score_factor')
        device, dtype = cls_scores[0].device, cls_scores[0].dtype
        mlvl_priors = head.prior_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], dtype=dtype, device=device)
        out = []
        for level, (cls, bbox, factor, priors) in enumerate(
                zip(cls_scores, bbox_preds, factors, mlvl_priors)):
            batch = cls.shape[0]
            metas_l = list(metas)
            if len(metas_l) != batch:  # n perturbed copies of one image
                metas_l = metas_l[:1] * batch
            logits = cls.permute(0, 2, 3, 1).reshape(batch, -1, head.cls_out_channels)
            scores, log_scores, logits = self._scores(logits)
            if classes is not None:
                scores, log_scores, logits = (t[..., classes] for t in
                                              (scores, log_scores, logits))
            score_factors = class_scores = None
            if factor is not None:
                class_scores = scores
                factor_logits = factor.permute(0, 2, 3, 1).reshape(batch, -1)
                score_factors = factor_logits.sigmoid()
                scores = scores * score_factors[..., None]
                log_scores = log_scores + F.logsigmoid(factor_logits)[..., None]
                logits = logits + factor_logits[..., None]
            deltas = bbox.permute(0, 2, 3, 1).reshape(batch, -1, head.bbox_coder.encode_size)
            boxes = torch.stack([
                head.bbox_coder.decode(priors, deltas[b], max_shape=metas_l[b]['img_shape'])
                for b in range(batch)])
            levels = torch.full((priors.shape[0], ), level, dtype=torch.long, device=device)
            out.append(FlatPredictions(scores=scores, log_scores=log_scores, logits=logits,
                                       boxes=boxes, levels=levels,
                                       score_factors=score_factors,
                                       class_scores=class_scores))
        return out

    def _input_size(self, feats) -> Tuple[int, int]:
        """The network input's ``(H, W)`` from the finest level and its stride."""
        height, width = feats[0].shape[-2:]
        stride = self.head.prior_generator.strides[0]
        return int(height * stride[1]), int(width * stride[0])

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        """The head's own post-processing (``_predict_by_feat_single`` then
        ``_bbox_post_process`` with ``rescale=True``) with its test config (or ``cfg``),
        keeping each detection's prior and class; then the detections scoring above
        ``score_thr``, the ``topk`` best (``<= 0``: all)."""
        from mmcv.ops import batched_nms
        from mmdet.models.utils import filter_scores_and_topk
        from mmdet.structures.bbox import scale_boxes
        cfg = self.test_cfg if cfg is None else cfg
        nms_pre = cfg.get('nms_pre', -1)
        head_thr = cfg.get('score_thr', 0)
        batch = preds.scores.shape[0]
        metas = list(metas) if metas is not None else [None] * batch
        out = []
        for b in range(batch):
            factors = None if preds.score_factors is None else preds.score_factors[b].detach()
            # the head thresholds the class scores alone, before its score factors
            pre_factor = (preds.scores if factors is None else preds.class_scores)[b].detach()
            cand_scores, cand_labels, cand_priors = [], [], []
            for level in range(int(preds.levels.max()) + 1 if preds.levels.numel() else 0):
                index = (preds.levels == level).nonzero(as_tuple=True)[0]
                scores, labels, keep, _ = filter_scores_and_topk(
                    pre_factor[index], head_thr, nms_pre)
                cand_scores.append(scores)
                cand_labels.append(labels)
                cand_priors.append(index[keep])
            scores, labels, priors = (torch.cat(v) for v in
                                      (cand_scores, cand_labels, cand_priors))
            boxes = preds.boxes[b].detach()[priors]
            nms_boxes = boxes
            meta = metas[b]
            if meta is not None and meta.get('scale_factor') is not None:
                nms_boxes = scale_boxes(boxes, [1 / s for s in meta['scale_factor']])
            if factors is not None:
                scores = scores * factors[priors]
            if cfg.get('min_bbox_size', -1) >= 0:
                w = nms_boxes[:, 2] - nms_boxes[:, 0]
                h = nms_boxes[:, 3] - nms_boxes[:, 1]
                valid = (w > cfg['min_bbox_size']) & (h > cfg['min_bbox_size'])
                if not valid.all():
                    scores, labels, priors, nms_boxes = (
                        t[valid] for t in (scores, labels, priors, nms_boxes))
            if nms_boxes.numel() > 0:
                det, keep = batched_nms(nms_boxes, scores, labels, cfg['nms'])
                scores, labels, priors = det[:, -1], labels[keep], priors[keep]
                max_per_img = cfg.get('max_per_img')
                if max_per_img is not None:
                    scores, labels, priors = (t[:max_per_img] for t in (scores, labels, priors))
            above = scores > score_thr
            scores, labels, priors = scores[above], labels[above], priors[above]
            if topk > 0:
                scores, labels, priors = scores[:topk], labels[:topk], priors[:topk]
            out.append(ExplainedBoxes(boxes=preds.boxes[b].detach()[priors], scores=scores,
                                      labels=labels, priors=priors,
                                      levels=preds.levels[priors]))
        return out

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The same candidates and selection as the CAMs (one decoder for both), boxes
        rescaled to each original image as ``_bbox_post_process`` does."""
        from mmdet.structures.bbox import scale_boxes
        preds = FlatPredictions.cat(self._output_candidates(outs, None, metas))
        dets = self.select(preds, float('-inf'), 0, metas, cfg)
        boxes = [scale_boxes(det.boxes, [1 / s for s in meta['scale_factor']])
                 for det, meta in zip(dets, metas)]
        return (torch.cat(boxes), torch.cat([d.scores for d in dets]),
                torch.cat([d.labels for d in dets]), [len(d) for d in dets])

    def decode_unbatched(self, outs, metas: List[dict], cfg: dict
                         ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        return decode_with_predict_by_feat(self.head, outs, metas, cfg)

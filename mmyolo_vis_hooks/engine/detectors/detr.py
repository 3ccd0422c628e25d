"""MMDetection's DETR family: DETR, Deformable DETR (plain, refine, two-stage), Conditional DETR,
DAB-DETR, DINO and DDQ-DETR.

How MMDetection predicts (``DetectionTransformer.predict``): ``extract_feat``, then
``forward_transformer(feats, data_samples)`` (the padding masks and positional encodings come
from each sample's ``img_shape`` and ``batch_input_shape``: the forward needs the metainfo),
then the head maps the decoder's hidden states to per-query class logits and normalised
``cxcywh`` boxes for every decoder layer, and ``DETRHead._predict_by_feat_single`` reads the
LAST layer: with sigmoid classes (Deformable DETR, DINO, ...) the ``max_per_img`` best of the
``num_queries x num_classes`` scores (``bbox_index = index // num_classes`` is the query), with
softmax classes (DETR) each query's best class and the ``max_per_img`` best queries; boxes
scaled to ``img_shape`` and clipped, no NMS.

Here the candidates are the queries: ``scores`` that sigmoid (or softmax without the
background column), ``logits`` the class logit, ``boxes`` the decoded query box. A box's CAM
explains its query's class logit at the last decoder layer. Re-scoring after a change runs the
transformer again: queries chosen from the encoder's proposals (two-stage Deformable DETR,
DINO) are not fixed, so the IoU match finds the query that now holds the box.

DDQ-DETR also selects distinct queries: an NMS over the encoder's proposals before the decoder,
and one over the queries' boxes after each decoder layer but the last, which masks the
suppressed queries out of the self-attention (its ``DDQTransformerDecoder``'s
``select_distinct_queries``; the masks are kept in the model's ``cache_dict``). ``DDQDETRHead.predict_by_feat``
then decodes, with ``DETRHead._predict_by_feat_single``, only the queries its last mask keeps.
Here every query is a candidate, the others marked invalid (score 0) from that same mask, and
the selection is the DETR top-k over the distinct ones.
"""
import inspect
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   above_score_thr, decode_by_predict, explained_boxes, samples_of,
                   uses_deformable_attention)


def uses_detr_decoding(head: nn.Module) -> bool:
    """Whether a DETR head decodes its last layer with ``DETRHead._predict_by_feat_single``
    (of its distinct queries for DDQ-DETR; Grounding DINO scores against text)."""
    from mmdet.models.dense_heads import DDQDETRHead, DeformableDETRHead, DETRHead
    cls = type(head)
    if cls._predict_by_feat_single is not DETRHead._predict_by_feat_single:
        return False
    return cls.predict_by_feat in (DETRHead.predict_by_feat,
                                   DeformableDETRHead.predict_by_feat,
                                   DDQDETRHead.predict_by_feat)


def decodes_distinct_queries(head: nn.Module) -> bool:
    """Whether the head decodes only the distinct queries (``DDQDETRHead.predict_by_feat``)."""
    from mmdet.models.dense_heads import DDQDETRHead
    return type(head).predict_by_feat is DDQDETRHead.predict_by_feat


class DETRDetector(ExplainableDetector):
    """MMDetection's ``DetectionTransformer`` models with a ``DETRHead`` decoding."""

    kind = 'MMDetection DETR-style detector'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if not uses_detr_decoding(self.head):
            raise UnsupportedDetectorError(
                f'{type(model).__name__}\'s head {type(self.head).__name__} decodes its '
                f'queries its own way; DETR box CAMs support heads with DETRHead\'s decoding '
                f'(DETR, Deformable DETR, Conditional DETR, DAB-DETR, DINO, DDQ-DETR)')
        self.sigmoid = bool(self.head.loss_cls.use_sigmoid)
        self.distinct_queries = decodes_distinct_queries(self.head)
        self._head_args = [name for name in inspect.signature(self.head.forward).parameters]
        self.batched_gradients = not uses_deformable_attention(model)

    def token_grids(self, feats) -> Tuple[Tuple[int, int], ...]:
        """Deformable DETR and its descendants (DINO, DDQ-DETR) flatten every level in turn
        (``DeformableDETR.pre_transformer``); DETR, Conditional DETR and DAB-DETR the last
        one only (``DETR.pre_transformer``)."""
        from mmdet.models.detectors import DeformableDETR
        levels = feats if isinstance(self.model, DeformableDETR) else feats[-1:]
        return tuple(tuple(int(s) for s in f.shape[-2:]) for f in levels)

    @property
    def candidate_thr(self) -> float:
        """DETR heads have no score threshold: every query of the top-k is a detection."""
        return float(self.test_cfg.get('score_thr', 0.0) or 0.0)

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        batch = max(f.shape[0] for f in feats)
        feats = tuple(f.expand(batch, *f.shape[1:]) if f.shape[0] != batch else f
                      for f in feats)
        if metas is None:  # the padding masks need each image's extent
            raise ValueError(f'{type(self.model).__name__} needs each image\'s metainfo '
                             f'(img_shape, batch_input_shape) to run its transformer')
        metas = list(metas)
        if len(metas) != batch:  # n changed copies of one image
            metas = metas[:1] * batch
        head_inputs = self.model.forward_transformer(feats, samples_of(metas))
        cls_all, box_all = self.head(**{k: head_inputs[k] for k in self._head_args
                                        if k in head_inputs})
        cls, box = cls_all[-1], box_all[-1]  # the last decoder layer: (B, Q, C[+1]), (B, Q, 4)
        if self.sigmoid:
            scores, log_scores, logits = cls.sigmoid(), F.logsigmoid(cls), cls
        else:
            scores = cls.softmax(-1)[..., :-1]
            log_scores, logits = cls.log_softmax(-1)[..., :-1], cls[..., :-1]
        if classes is not None:
            scores, log_scores, logits = scores[..., classes], log_scores[..., classes], \
                logits[..., classes]
        sizes = box.new_tensor([[m['img_shape'][1], m['img_shape'][0]] * 2 for m in metas])
        cx, cy, w, h = box.unbind(-1)
        xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        boxes = torch.minimum((xyxy * sizes[:, None]).clamp(min=0), sizes[:, None])
        levels = torch.zeros(box.shape[1], dtype=torch.long, device=box.device)
        valid = None
        if self.distinct_queries:
            # DDQDETRHead.predict_by_feat's own choice: row 0 of the last layer's
            # distinct-query mask of each image (first attention head)
            cache = self.head.cache_dict
            valid = torch.stack([cache['distinct_query_mask'][-1][b * cache['num_heads']][0]
                                 for b in range(batch)])
            scores = torch.where(valid[..., None], scores, scores.new_zeros(()))
            log_scores = torch.where(valid[..., None], log_scores,
                                     log_scores.new_full((), float('-inf')))
            logits = torch.where(valid[..., None], logits, logits.new_full((), float('-inf')))
        return [FlatPredictions(scores=scores, log_scores=log_scores, logits=logits,
                                boxes=boxes, levels=levels, valid=valid)]

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """``DETRHead._predict_by_feat_single``'s choice of (query, class) pairs (among the
        valid, i.e. distinct, queries for DDQ-DETR); then the detections above ``score_thr``,
        the ``topk`` best (``<= 0``: all)."""
        out = []
        num_queries = preds.scores.shape[1]
        max_per_img = int(self.test_cfg.get('max_per_img', num_queries))
        for b in range(preds.scores.shape[0]):
            scores = preds.scores[b].detach()
            kept = None
            if preds.valid is not None:  # DDQ-DETR decodes its distinct queries only
                kept = preds.valid[b].nonzero()[:, 0]
                scores = scores[kept]
            if self.sigmoid:
                top, index = scores.reshape(-1).topk(max_per_img)
                labels = index % self.num_classes
                queries = index // self.num_classes
            else:
                best, labels = scores.max(-1)
                top, queries = best.topk(max_per_img)
                labels = labels[queries]
            if kept is not None:
                queries = kept[queries]
            out.append(explained_boxes(preds, b, top, labels, queries, score_thr, topk))
        return out

    def forward(self, inputs: Tensor):
        """The preprocessed batch itself: the transformer needs the metainfo."""
        return inputs

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """MMDetection's own ``predict`` (transformer, last-layer top-k, rescaled), with the
        boxes at or below ``cfg['score_thr']`` dropped (DETR heads keep every top-k query)."""
        return above_score_thr(*decode_by_predict(self.model, self.head, outs, metas, cfg),
                               cfg)

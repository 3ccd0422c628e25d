"""MMDetection's dense one-stage heads that decode level by level like ``BaseDenseHead``.

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
the prior and class of every detection.

Heads with a ``_predict_by_feat_single`` of their own on the same per-level structure are
subclasses that replace only what differs: the box decoding (GFL/LD, FoveaBox, RepPoints),
the scores (TOOD, whose class output is already a score) or the post-processing (PAA/LAD's
geometric mean, ``multiclass_nms`` and score voting). MMDetection's YOLO heads select over all
levels at once (``mmdet_yolo.py``). SABL RetinaNet's boxes and score factors come from its
bucketing coder. An RPN alone is a one-class dense head with NMS per level. CenterNet's class
heatmap has its own file (``centernet.py``); CornerNet/CentripetalNet and guided anchoring have
no adapter.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   decode_with_predict_by_feat, default_metas, explained_boxes,
                   split_dense_outputs)


def _flat(output: Tensor, channels: int) -> Tensor:
    """``(B, A * channels, H, W)`` per-level output as ``(B, H * W * A, channels)``, the
    heads' own candidate order."""
    return output.permute(0, 2, 3, 1).reshape(output.shape[0], -1, channels)


def bbox_post_process(boxes: Tensor, scores: Tensor, labels: Tensor, priors: Tensor,
                      factors: Optional[Tensor], meta: Optional[dict], cfg: dict
                      ) -> Tuple[Tensor, Tensor, Tensor]:
    """``BaseDenseHead._bbox_post_process`` (``rescale=True``, with NMS) on the candidates
    ``(scores, labels, priors)`` of one image whose boxes (all priors', network-input pixels)
    are ``boxes``: rescale, times the score ``factors`` of the priors, ``min_bbox_size``,
    ``batched_nms``, ``max_per_img``; the kept ``(scores, labels, priors)``, best first."""
    from mmcv.ops import batched_nms
    from mmdet.structures.bbox import scale_boxes
    nms_boxes = boxes[priors]
    if meta is not None and meta.get('scale_factor') is not None:
        nms_boxes = scale_boxes(nms_boxes, [1 / s for s in meta['scale_factor']])
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
    return scores, labels, priors


class MMDetDenseDetector(ExplainableDetector):
    """MMDetection's single-stage detectors whose dense head decodes like ``BaseDenseHead``."""

    kind = 'MMDetection dense head'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        # SSDHead has no loss_cls module (its loss is written out), so no custom activation;
        # V3Det's FocalCustomLoss activates with the plain sigmoid of the C class columns
        from mmdet.models.losses import FocalCustomLoss
        loss = getattr(self.head, 'loss_cls', None)
        if getattr(loss, 'custom_cls_channels', False) and not (
                type(loss).get_activation is FocalCustomLoss.get_activation
                and self.head.cls_out_channels == self.head.num_classes):
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

    def _scores(self, cls: Tensor, captured=None) -> Tuple[Tensor, Tensor, Tensor]:
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
                           metas: Sequence[dict], level_logits=None) -> List[FlatPredictions]:
        """The candidates of the head's outputs, per level (``level_logits``: what
        :meth:`level_candidates` captured for :meth:`_scores`)."""
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
            scores, log_scores, logits = self._scores(
                _flat(cls, head.cls_out_channels),
                None if level_logits is None else level_logits[level])
            if classes is not None:
                scores, log_scores, logits = (t[..., classes] for t in
                                              (scores, log_scores, logits))
            score_factors = class_scores = None
            if factor is not None:
                scores, log_scores, logits, score_factors, class_scores = self._with_factor(
                    scores, log_scores, logits, _flat(factor, 1)[..., 0])
            boxes = self._boxes(level, priors, bbox, metas_l)
            levels = torch.full((priors.shape[0], ), level, dtype=torch.long, device=device)
            out.append(FlatPredictions(scores=scores, log_scores=log_scores, logits=logits,
                                       boxes=boxes, levels=levels,
                                       score_factors=score_factors,
                                       class_scores=class_scores))
        return out

    def _with_factor(self, scores: Tensor, log_scores: Tensor, logits: Tensor,
                     factor_logits: Tensor) -> Tuple[Tensor, ...]:
        """Scores times ``sigmoid(score factor)``, as ``_bbox_post_process`` multiplies them
        after the threshold: ``(scores, log_scores, logits, score_factors, class_scores)``."""
        score_factors = factor_logits.sigmoid()
        return (scores * score_factors[..., None],
                log_scores + F.logsigmoid(factor_logits)[..., None],
                logits + factor_logits[..., None], score_factors, scores)

    def _boxes(self, level: int, priors: Tensor, bbox: Tensor, metas: Sequence[dict]
               ) -> Tensor:
        """``(B, N, 4)`` boxes of one level's ``(B, C, H, W)`` box output: the head's
        ``bbox_coder.decode(priors, deltas, max_shape=img_shape)`` per image."""
        coder = self.head.bbox_coder
        deltas = _flat(bbox, coder.encode_size)
        return torch.stack([coder.decode(priors, deltas[b], max_shape=metas[b]['img_shape'])
                            for b in range(deltas.shape[0])])

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
        cfg = self.test_cfg if cfg is None else cfg
        batch = preds.scores.shape[0]
        metas = list(metas) if metas is not None else [None] * batch
        out = []
        for b in range(batch):
            scores, labels, priors, factors = self._filter(preds, b, cfg)
            scores, labels, priors = bbox_post_process(preds.boxes[b].detach(), scores,
                                                       labels, priors, factors, metas[b], cfg)
            out.append(explained_boxes(preds, b, scores, labels, priors, score_thr, topk))
        return out

    def _filter(self, preds: FlatPredictions, b: int, cfg: dict
                ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """``_predict_by_feat_single``'s candidates of image ``b``: per level the (prior,
        class) pairs above ``score_thr``, the ``nms_pre`` best (``filter_scores_and_topk``),
        as ``(scores, labels, priors, score factors of all priors or None)``."""
        from mmdet.models.utils import filter_scores_and_topk
        factors = None if preds.score_factors is None else preds.score_factors[b].detach()
        # the head thresholds the class scores alone, before its score factors
        pre_factor = (preds.scores if factors is None else preds.class_scores)[b].detach()
        cand_scores, cand_labels, cand_priors = [], [], []
        for level in range(int(preds.levels.max()) + 1 if preds.levels.numel() else 0):
            index = (preds.levels == level).nonzero(as_tuple=True)[0]
            scores, labels, keep, _ = filter_scores_and_topk(
                pre_factor[index], cfg.get('score_thr', 0), cfg.get('nms_pre', -1))
            cand_scores.append(scores)
            cand_labels.append(labels)
            cand_priors.append(index[keep])
        scores, labels, priors = (torch.cat(v) for v in (cand_scores, cand_labels, cand_priors))
        return scores, labels, priors, factors

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


class GFLDetector(MMDetDenseDetector):
    """GFL (and LD, whose head is GFL's): ``GFLHead._predict_by_feat_single`` is the base
    decoding with its own boxes, the expectation of each side's distance distribution
    (``head.integral``) times the level's stride, decoded from the anchor centers by the
    head's distance ``bbox_coder``."""

    kind = 'MMDetection GFL head'

    def _boxes(self, level: int, priors: Tensor, bbox: Tensor, metas: Sequence[dict]
               ) -> Tensor:
        head = self.head
        stride = head.prior_generator.strides[level][0]
        distances = head.integral(bbox.permute(0, 2, 3, 1)).reshape(bbox.shape[0], -1, 4)
        distances = distances * stride
        centers = head.anchor_center(priors)
        return torch.stack([head.bbox_coder.decode(centers, distances[b],
                                                   max_shape=metas[b]['img_shape'])
                            for b in range(bbox.shape[0])])


class TOODDetector(MMDetDenseDetector):
    """TOOD: the head's class output is already a score, ``sigmoid_geometric_mean`` of the
    class logits (``tood_cls``) and a per-position probability logit (``cls_prob_module``),
    ``sqrt(sigmoid(a) * sigmoid(b))``; its box output is the decoded box in stride units
    (``TOODHead._predict_by_feat_single`` multiplies it by the stride, no clipping). The
    scores are the head's own; both logits are read from the head's forward, so a box's
    target is ``a + b`` (``'logit'``) or ``(logsigmoid(a) + logsigmoid(b)) / 2``
    (``'log_score'``)."""

    kind = 'MMDetection TOOD head'

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        if metas is None:
            metas = default_metas(max(f.shape[0] for f in feats), *self._input_size(feats))
        captured = {'cls': [], 'prob': []}
        handles = [module.register_forward_hook(
            lambda _module, _args, output, key=key: captured[key].append(output))
            for key, module in (('cls', self.head.tood_cls),
                                ('prob', self.head.cls_prob_module))]
        try:
            outputs = self.head(tuple(feats))
        finally:
            for handle in handles:
                handle.remove()
        return self._output_candidates(outputs, classes, metas,
                                       list(zip(captured['cls'], captured['prob'])))

    def _scores(self, cls: Tensor, captured=None) -> Tuple[Tensor, Tensor, Tensor]:
        if captured is None:  # batched decoding: only the scores are used
            return cls, cls.log(), torch.logit(cls)
        cls_logits, prob_logits = captured
        channels = self.head.cls_out_channels
        cls_logits = _flat(cls_logits, channels)
        # one probability per position for all its anchors and classes
        prob_logits = _flat(prob_logits.expand(-1, self.head.num_base_priors, -1, -1), 1)
        return (cls, (F.logsigmoid(cls_logits) + F.logsigmoid(prob_logits)) / 2,
                cls_logits + prob_logits)

    def _boxes(self, level: int, priors: Tensor, bbox: Tensor, metas: Sequence[dict]
               ) -> Tensor:
        return _flat(bbox, 4) * self.head.prior_generator.strides[level][0]


class FoveaDetector(MMDetDenseDetector):
    """FoveaBox: the base decoding with the head's own ``_bbox_decode`` (exp distances times
    the level's ``base_edge_list`` length, clipped to the image)."""

    kind = 'MMDetection FoveaBox head'

    def _boxes(self, level: int, priors: Tensor, bbox: Tensor, metas: Sequence[dict]
               ) -> Tensor:
        deltas = _flat(bbox, 4)
        return torch.stack([self.head._bbox_decode(priors, deltas[b],
                                                   self.head.base_edge_list[level],
                                                   metas[b]['img_shape'])
                            for b in range(deltas.shape[0])])


class RepPointsDetector(MMDetDenseDetector):
    """RepPoints: the base decoding with the head's own ``_bbox_decode`` (the refined points'
    box, in eval mode the head's output, times the level's point stride from the point)."""

    kind = 'MMDetection RepPoints head'

    def _boxes(self, level: int, priors: Tensor, bbox: Tensor, metas: Sequence[dict]
               ) -> Tensor:
        deltas = _flat(bbox, 4)
        return torch.stack([self.head._bbox_decode(priors, deltas[b],
                                                   self.head.point_strides[level],
                                                   metas[b]['img_shape'])
                            for b in range(deltas.shape[0])])


class PAADetector(MMDetDenseDetector):
    """PAA (and LAD, whose head is PAA's): ATSS's outputs (class logits ``c``, boxes, an IoU
    logit ``f``), scored by ``PAAHead._bbox_post_process`` as the geometric mean
    ``sqrt(sigmoid(c) * sigmoid(f))``, which ``multiclass_nms`` thresholds and sorts. Per
    level the ``nms_pre`` priors with the best score are kept, then ``multiclass_nms``; with
    score voting the head's own ``score_voting`` moves each kept box to the score-weighted
    mean of the same class's candidate boxes around it. A box's target is ``c + f``
    (``'logit'``) or the log of its geometric mean (``'log_score'``).

    :meth:`select` gives the detections in ``multiclass_nms``'s order (best first); the
    head's own prediction lists them class by class (its score voting loops over the
    classes), in that order within each class."""

    kind = 'MMDetection PAA head'

    def _with_factor(self, scores: Tensor, log_scores: Tensor, logits: Tensor,
                     factor_logits: Tensor) -> Tuple[Tensor, ...]:
        """The geometric mean, computed as ``_bbox_post_process`` does; no separate factor
        (the threshold applies to the mean)."""
        return ((scores * factor_logits.sigmoid()[..., None]).sqrt(),
                (log_scores + F.logsigmoid(factor_logits)[..., None]) / 2,
                logits + factor_logits[..., None], None, None)

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        """``PAAHead._predict_by_feat_single`` then its ``_bbox_post_process`` with
        ``rescale=True``, keeping each detection's prior and class; then the detections
        above ``score_thr``, the ``topk`` best (``<= 0``: all)."""
        from mmdet.models.layers import multiclass_nms
        cfg = self.test_cfg if cfg is None else cfg
        nms_pre = cfg.get('nms_pre', -1)
        out = []
        for b in range(preds.scores.shape[0]):
            scores_all = preds.scores[b].detach()
            priors = []
            for level in range(int(preds.levels.max()) + 1 if preds.levels.numel() else 0):
                index = (preds.levels == level).nonzero(as_tuple=True)[0]
                if 0 < nms_pre < len(index):
                    _, best = scores_all[index].max(dim=1)[0].topk(nms_pre)
                    index = index[best]
                priors.append(index)
            priors = torch.cat(priors)
            scores = scores_all[priors]
            boxes = preds.boxes[b].detach()[priors]
            meta = None if metas is None else metas[b]
            scale = None if meta is None else meta.get('scale_factor')
            if scale is not None:
                boxes = boxes / boxes.new_tensor(scale).repeat((1, 2))
            num_classes = scores.shape[1]
            with_bg = torch.cat([scores, scores.new_zeros((len(scores), 1))], dim=1)
            dets, labels, inds = multiclass_nms(boxes, with_bg, cfg['score_thr'], cfg['nms'],
                                                cfg['max_per_img'], return_inds=True)
            det_priors = priors[inds // num_classes]
            det_boxes = preds.boxes[b].detach()[det_priors]
            if self.head.with_score_voting and len(dets) > 0:
                voted, _ = self.head.score_voting(dets, labels, boxes, with_bg,
                                                  cfg['score_thr'])
                # score_voting lists the detections class by class
                by_class = torch.sort(labels, stable=True)[1]
                det_boxes = torch.empty_like(det_boxes)
                det_boxes[by_class] = voted[:, :4]
                if scale is not None:
                    det_boxes = det_boxes * det_boxes.new_tensor(scale).repeat((1, 2))
            det_scores = dets[:, -1]
            above = det_scores > score_thr
            keep = above.nonzero(as_tuple=True)[0]
            if topk > 0:
                keep = keep[:topk]
            out.append(ExplainedBoxes(boxes=det_boxes[keep], scores=det_scores[keep],
                                      labels=labels[keep], priors=det_priors[keep],
                                      levels=preds.levels[det_priors[keep]]))
        return out

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The head's own ``predict_by_feat`` (score voting moves boxes after the NMS)."""
        return self.decode_unbatched(outs, metas, cfg)


class SABLRetinaDetector(MMDetDenseDetector):
    """SABL RetinaNet (``SABLRetinaHead``): the base structure with square anchors
    (``square_anchor_generator``) and bucketing boxes. Each level's box output is a pair
    (bucket logits, offsets); the head's ``BucketingBBoxCoder.decode`` gives every anchor its
    box and a localization confidence (the mean over the four sides of the best bucket's
    probability, plus its neighbour's), which ``_bbox_post_process`` multiplies into the class
    scores after the threshold, as a score factor. The confidence has no logit of its own: it
    enters the score and the log score, and the logit target is the class logit alone."""

    kind = 'MMDetection SABL head'

    @property
    def num_levels(self) -> int:
        return self.head.square_anchor_generator.num_levels

    def _input_size(self, feats) -> Tuple[int, int]:
        height, width = feats[0].shape[-2:]
        stride = self.head.square_anchor_generator.strides[0]
        return int(height * stride[1]), int(width * stride[0])

    def _output_candidates(self, outputs, classes: Optional[Tensor],
                           metas: Sequence[dict], level_logits=None) -> List[FlatPredictions]:
        head = self.head
        cls_scores, bbox_preds, _ = split_dense_outputs(head, outputs, 'score_factor')
        device = cls_scores[0].device
        # SABLRetinaHead.get_anchors: the same squares for every image
        mlvl_anchors = head.square_anchor_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], device=device)
        sides = head.side_num * 4
        out = []
        for level, (cls, (bucket_cls, bucket_reg), anchors) in enumerate(
                zip(cls_scores, bbox_preds, mlvl_anchors)):
            batch = cls.shape[0]
            metas_l = list(metas)
            if len(metas_l) != batch:  # n perturbed copies of one image
                metas_l = metas_l[:1] * batch
            scores, log_scores, logits = self._scores(_flat(cls, head.cls_out_channels))
            if classes is not None:
                scores, log_scores, logits = (t[..., classes] for t in
                                              (scores, log_scores, logits))
            bucket_cls, bucket_reg = _flat(bucket_cls, sides), _flat(bucket_reg, sides)
            # contiguous as the head passes them (bucket2bbox views them)
            decoded = [head.bbox_coder.decode(anchors, [bucket_cls[b].contiguous(),
                                                        bucket_reg[b].contiguous()],
                                              max_shape=metas_l[b]['img_shape'])
                       for b in range(batch)]
            boxes = torch.stack([d[0] for d in decoded])
            confidence = torch.stack([d[1] for d in decoded])
            levels = torch.full((anchors.shape[0], ), level, dtype=torch.long, device=device)
            out.append(FlatPredictions(scores=scores * confidence[..., None],
                                       log_scores=log_scores + confidence.log()[..., None],
                                       logits=logits, boxes=boxes, levels=levels,
                                       score_factors=confidence, class_scores=scores))
        return out


class RPNDetector(MMDetDenseDetector):
    """MMDetection's RPN alone (detector ``RPN``, head ``RPNHead``): class-agnostic proposals,
    one class ("object"). ``RPNHead._predict_by_feat_single`` keeps per level the ``nms_pre``
    best objectness scores (all of a level, unsorted, when it has fewer), decodes their boxes
    like the base; its ``_bbox_post_process`` rescales, drops boxes under ``min_bbox_size``,
    runs ``batched_nms`` with the LEVEL as the group (NMS within each level) and keeps
    ``max_per_img``; every label is 0. A box's target is its anchor's objectness."""

    kind = 'MMDetection RPN'

    @property
    def class_names(self) -> List[str]:
        """One class: the dataset's names describe the detector trained on the proposals."""
        return ['object']

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        cfg = self.test_cfg if cfg is None else cfg
        batch = preds.scores.shape[0]
        metas = list(metas) if metas is not None else [None] * batch
        nms_pre = cfg.get('nms_pre', -1)
        out = []
        for b in range(batch):
            objectness = preds.scores[b, :, 0].detach()
            kept = []
            for level in range(int(preds.levels.max()) + 1 if preds.levels.numel() else 0):
                index = (preds.levels == level).nonzero(as_tuple=True)[0]
                if 0 < nms_pre < len(index):  # RPNHead's own sort, then the first nms_pre
                    index = index[objectness[index].sort(descending=True)[1][:nms_pre]]
                kept.append(index)
            priors = torch.cat(kept)
            # the level is batched_nms's group: NMS within each level
            scores, _, priors = bbox_post_process(preds.boxes[b].detach(), objectness[priors],
                                                  preds.levels[priors], priors, None, metas[b],
                                                  cfg)
            out.append(explained_boxes(preds, b, scores, torch.zeros_like(priors), priors,
                                       score_thr, topk))
        return out


def decodes_like(head_cls: type, reference: type) -> bool:
    """Whether ``head_cls`` predicts with ``reference``'s own decoding and post-processing."""
    return all(getattr(head_cls, name, None) is getattr(reference, name, None)
               for name in ('predict_by_feat', '_predict_by_feat_single', '_bbox_post_process'))


def adapter_classes() -> dict:
    """MMDetection dense head class -> the adapter of heads that decode like it."""
    from mmdet.models.dense_heads import (FoveaHead, GFLHead, PAAHead, RepPointsHead,
                                          RPNHead, SABLRetinaHead, TOODHead)
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    return {GFLHead: GFLDetector, TOODHead: TOODDetector, PAAHead: PAADetector,
            FoveaHead: FoveaDetector, RepPointsHead: RepPointsDetector,
            SABLRetinaHead: SABLRetinaDetector, RPNHead: RPNDetector,
            BaseDenseHead: MMDetDenseDetector}

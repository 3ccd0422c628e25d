"""MMDetection's two-stage (RoI) detectors: Faster R-CNN and the box branch of Mask R-CNN,
Libra, Dynamic, Double-Head, PISA, MS R-CNN, PointRend (``StandardRoIHead``), the cascades
(Cascade R-CNN / Cascade Mask R-CNN, HTC, SCNet: ``CascadeRoIHead``) and Grid R-CNN
(``GridRoIHead``).

How MMDetection predicts (``TwoStageDetector.predict``): the RPN proposes boxes
(``rpn_head.predict``, no gradient: its boxes are detached), ``bbox2roi`` batches them, the RoI
head pools each proposal's features (RoIAlign) and its ``bbox_head`` returns ``(R, C + 1)``
class logits (the last column is the background) and per-class box deltas; ``BBoxHead.
_predict_by_feat_single`` takes the softmax, decodes every class's box with ``bbox_coder``
(clipped to ``img_shape``), rescales, and ``multiclass_nms`` keeps the (RoI, class) pairs above
``score_thr`` after class-wise NMS. A cascade runs its stages one after another
(``CascadeRoIHead._refine_roi``: each stage re-pools the boxes the previous one regressed) and
scores with the MEAN of the stages' class logits, boxes from the last stage. HTC's and SCNet's
box branches add image-level features to every RoI's (a semantic head's, SCNet's global
context head's), which their ``predict`` computes from the levels and hands to every stage's
``_bbox_forward``; :meth:`TwoStageDetector._image_context` does the same. SABL's box head
(``SABLHead``) regresses one box per RoI as bucket logits and offsets; its
``_predict_by_feat_single`` decodes them with its ``BucketingBBoxCoder``, which also gives a
localization confidence that ``multiclass_nms`` multiplies into the class scores after its
threshold (``score_factors``). Its candidates carry that confidence as their score factors:
``scores`` are the products, ``logits`` stay the class logits. A box head trained with the
Seesaw loss has ``C + 2`` outputs and scores with the loss's ``get_activation`` (class softmax
times the softmax of an objectness pair); its ``logits`` add that objectness logit. V3Det's
``CrossEntropyCustomLoss`` with ``use_sigmoid`` scores each class by its sigmoid (without, a
plain softmax over ``C + 1``).

Here the candidates are the RoIs of one image: ``scores`` = that softmax without the background
column, ``logits`` = the class logit (for a cascade: the stages' mean logit, the value its
softmax is taken of), ``class_boxes`` every class's decoded box, ``proposals`` the RPN boxes
they came from. :meth:`TwoStageDetector.select` runs ``multiclass_nms(..., return_inds=True)``
on exactly the head's inputs, so each detection keeps its RoI and class. A box's CAM therefore
explains its OWN class logit from its own RoI, with the proposals fixed: it shows which
features the RoI head used to classify that region, not why the RPN proposed it (the proposal
step is not differentiable in MMDetection). Gradient-free re-scoring (AblationCAM) keeps the
unmasked image's proposals too; D-RISE and the faithfulness metrics re-detect from scratch
(black box), as the detector would.

TridentNet (``TridentFasterRCNN``) runs one of its weight-sharing branches at test time
(``test_branch_idx``: the backbone's trident blocks use only that branch's dilation, one
feature map per image) and ``TridentRoIHead.predict`` is ``StandardRoIHead``'s followed by
``merge_trident_bboxes`` over the branches' detections: with one branch, a class-wise NMS of
detections that the same class-wise NMS already kept, which keeps them all. So a TridentNet
is explained as the Faster R-CNN of its test branch: its candidates are that branch's RoIs.
With ``test_branch_idx=-1`` (every branch at test time, each image's detections merged across
branches) it is refused.

Grid R-CNN's bbox head only classifies (no regression: a candidate's box is its RoI);
``GridRoIHead.predict_bbox`` runs the NMS on the network input, then its grid head moves each
kept box (``GridHead.predict_by_feat``: a heatmap per grid point on the box's RoI features,
boundaries voted from the points). :meth:`TwoStageDetector.select` runs the same NMS and then
that same grid head decoding on the kept boxes, so the boxes are the model's; the score, and so
the CAM's target, is still the box's own RoI's class logit (the grid head does not score). The
re-scoring with fixed proposals matches each box's own RoI, not its refined box.
"""
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   decode_by_predict, default_metas, pad_masks, samples_of)


def _decodes_like_bbox_head(head: nn.Module) -> bool:
    """Whether a box head decodes with ``BBoxHead``'s or ``SABLHead``'s own
    ``_predict_by_feat_single`` (both go through ``bbox_coder.decode`` and
    ``multiclass_nms``)."""
    from mmdet.models.roi_heads.bbox_heads import BBoxHead, SABLHead
    own = type(head)._predict_by_feat_single
    return isinstance(head, BBoxHead) and (own is BBoxHead._predict_by_feat_single or
                                           own is SABLHead._predict_by_feat_single)


def _is_sabl(head: nn.Module) -> bool:
    """Whether a box head decodes like ``SABLHead`` (bucketing: boxes and a localization
    confidence per RoI)."""
    from mmdet.models.roi_heads.bbox_heads import SABLHead
    return type(head)._predict_by_feat_single is SABLHead._predict_by_feat_single


def _is_seesaw(head: nn.Module) -> bool:
    """Whether a box head scores with the Seesaw loss's activation (``C + 2`` outputs: the
    classes, then a positive and a negative objectness column)."""
    from mmdet.models.losses import SeesawLoss
    get_activation = getattr(type(getattr(head, 'loss_cls', None)), 'get_activation', None)
    return get_activation is SeesawLoss.get_activation


def _is_sigmoid_custom_ce(head: nn.Module) -> bool:
    """Whether a box head scores with ``CrossEntropyCustomLoss``'s sigmoid activation (V3Det's
    configs: ``C + 1`` outputs, a sigmoid per class; without the sigmoid it is a plain softmax
    over all ``C + 1``)."""
    from mmdet.models.losses import CrossEntropyCustomLoss
    loss = getattr(head, 'loss_cls', None)
    return getattr(type(loss), 'get_activation', None) is \
        CrossEntropyCustomLoss.get_activation and bool(getattr(loss, 'use_sigmoid', False))


def _is_custom_ce(head: nn.Module) -> bool:
    from mmdet.models.losses import CrossEntropyCustomLoss
    return getattr(type(getattr(head, 'loss_cls', None)), 'get_activation', None) is \
        CrossEntropyCustomLoss.get_activation


def roi_head_kind(roi_head: nn.Module) -> Optional[str]:
    """``'standard'``, ``'cascade'`` or ``'grid'`` when the RoI head predicts boxes like
    ``StandardRoIHead``/``CascadeRoIHead``/``GridRoIHead`` with a standard ``BBoxHead``
    (or ``SABLHead``) decoding, else None."""
    from mmdet.models.roi_heads import CascadeRoIHead, GridRoIHead, StandardRoIHead
    cls = type(roi_head)
    if isinstance(roi_head, GridRoIHead):  # a StandardRoIHead: tested first
        kind, reference = 'grid', GridRoIHead
        bbox_heads = [roi_head.bbox_head]
    elif isinstance(roi_head, CascadeRoIHead):
        kind, reference = 'cascade', CascadeRoIHead
        bbox_heads = list(roi_head.bbox_head)
    elif isinstance(roi_head, StandardRoIHead):
        kind, reference = 'standard', StandardRoIHead
        bbox_heads = [roi_head.bbox_head]
    else:
        return None
    if cls.predict_bbox is not reference.predict_bbox:
        return None
    if not all(_decodes_like_bbox_head(head) for head in bbox_heads):
        return None
    return kind


class TwoStageDetector(ExplainableDetector):
    """MMDetection's ``TwoStageDetector`` with a standard or cascade RoI head."""

    kind = 'MMDetection two-stage detector'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.roi_head = model.roi_head
        self.roi_kind = roi_head_kind(self.roi_head)
        if self.roi_kind is None:
            raise UnsupportedDetectorError(
                f'{type(model).__name__}\'s RoI head {type(self.roi_head).__name__} predicts '
                f'boxes its own way; two-stage box CAMs support StandardRoIHead and '
                f'CascadeRoIHead with BBoxHead decoding (Faster/Mask/Cascade R-CNN, HTC, ...) '
                f'and GridRoIHead')
        if getattr(model, 'num_branch', 1) > 1 and getattr(model, 'test_branch_idx', 0) == -1:
            raise UnsupportedDetectorError(
                f'{type(model).__name__} with test_branch_idx=-1 merges the detections of its '
                f'{model.num_branch} branches per image; box CAMs explain one test branch (set '
                f'test_branch_idx to a branch index, as the packaged configs do)')
        self.head = self.roi_head.bbox_head[-1] if self.roi_kind == 'cascade' \
            else self.roi_head.bbox_head
        if self.head.custom_cls_channels and not (_is_seesaw(self.head)
                                                  or _is_custom_ce(self.head)):
            raise UnsupportedDetectorError(
                f'{type(self.head.loss_cls).__name__} turns logits into scores with its '
                f'own activation; box CAMs support softmax classifiers, the Seesaw loss\'s and '
                f'CrossEntropyCustomLoss\'s')

    @property
    def test_cfg(self) -> dict:
        return self.roi_head.test_cfg or {}

    @property
    def predicts_masks(self) -> bool:
        return self.with_mask

    @property
    def with_mask(self) -> bool:
        """Whether the RoI head predicts instance masks with ``StandardRoIHead``'s or
        ``CascadeRoIHead``'s own ``predict_mask`` (Mask R-CNN, Cascade Mask R-CNN, ...). RoI
        heads with a mask prediction of their own (HTC's reads a semantic branch) are
        explained by their boxes only, and so is Grid R-CNN (its masks would be pasted on the
        refined boxes; no packaged config has a mask head)."""
        from mmdet.models.roi_heads import CascadeRoIHead, StandardRoIHead
        if not getattr(self.roi_head, 'with_mask', False) or self.roi_kind == 'grid':
            return False
        own = type(self.roi_head).predict_mask
        return own is StandardRoIHead.predict_mask or own is CascadeRoIHead.predict_mask

    @property
    def selection_thr(self) -> float:
        """The ``rcnn`` ``test_cfg.score_thr``: ``multiclass_nms`` keeps the scores above it."""
        return float(self.test_cfg.get('score_thr', 0) or 0)

    @property
    def head_name(self) -> str:
        return type(self.roi_head).__name__

    def propose(self, feats, metas: Sequence[dict]) -> List[Tensor]:
        """The RPN's boxes per image, in network-input pixels (no gradient)."""
        with torch.no_grad():
            results = self.model.rpn_head.predict(tuple(feats), samples_of(metas),
                                                  rescale=False)
        return [res.bboxes for res in results]

    def _roi_outputs(self, feats, proposals: List[Tensor], metas: Sequence[dict]
                     ) -> Tuple[List[Tensor], List[Tensor], List[Optional[Tensor]]]:
        """Per image: the final RoIs, class logits ``(R, C + 1)`` and box deltas."""
        from mmdet.structures.bbox import bbox2roi
        # mmcv's RoIAlign reads contiguous NCHW memory whatever the strides: channels-last
        # features (CPU inputs in the network layout) or a broadcast batch (AblationCAM's
        # unchanged levels) would pool the wrong values, even beyond the tensor's storage.
        feats = [f.contiguous() for f in feats]
        rois = bbox2roi(proposals)
        counts = tuple(len(p) for p in proposals)
        if self.roi_kind == 'cascade':
            rois, cls_scores, bbox_preds = self.roi_head._refine_roi(
                x=tuple(feats), rois=rois, batch_img_metas=list(metas),
                num_proposals_per_img=counts, **self._image_context(feats))
            return list(rois), list(cls_scores), list(bbox_preds)
        results = self.roi_head._bbox_forward(tuple(feats), rois)
        bbox_pred = results['bbox_pred']
        if bbox_pred is None:
            bbox_preds = [None] * len(counts)
        elif isinstance(bbox_pred, Tensor):
            bbox_preds = list(bbox_pred.split(counts))
        else:  # SABL's (bucket logits, offsets), split as StandardRoIHead.predict_bbox does
            bbox_preds = list(self.head.bbox_pred_split(bbox_pred, counts))
        return list(rois.split(counts)), list(results['cls_score'].split(counts)), bbox_preds

    def _image_context(self, feats) -> dict:
        """The image-level features a cascade's box branch fuses into every RoI, as its own
        ``predict`` computes them from the same levels and hands them to ``predict_bbox``:
        HTC's and SCNet's semantic feature (``semantic_head``), SCNet's global context
        (``glbctx_head``). Empty for other RoI heads. They are differentiable: a box's
        gradient also reaches the levels through them."""
        roi_head, context = self.roi_head, {}
        if getattr(roi_head, 'with_semantic', False):
            _, context['semantic_feat'] = roi_head.semantic_head(tuple(feats))
        if getattr(roi_head, 'with_glbctx', False):
            _, context['glbctx_feat'] = roi_head.glbctx_head(tuple(feats))
        return context

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        # levels given at batch 1 beside a changed level of n copies (AblationCAM's re-scoring)
        batch = max(f.shape[0] for f in feats)
        feats = [f.expand(batch, *f.shape[1:]) if f.shape[0] != batch else f for f in feats]
        if metas is None:
            stride = self.model.rpn_head.prior_generator.strides[0]
            metas = default_metas(batch, feats[0].shape[-2] * stride[1],
                                  feats[0].shape[-1] * stride[0])
        metas = list(metas)
        if len(metas) != batch:  # n changed copies of one image
            metas = metas[:1] * batch
        if proposals is None:
            boxes = self.propose(feats, metas)
        else:  # fixed (B or 1, R, 4): the unmasked image's proposals (padding rows: NaN)
            boxes = [proposals[min(b, len(proposals) - 1)] for b in range(batch)]
            boxes = [p[~p.isnan().any(dim=1)] for p in boxes]
        rois, cls_scores, bbox_preds = self._roi_outputs(feats, boxes, metas)
        per_image = [self._decode(roi, cls, pred, meta, classes)
                     for roi, cls, pred, meta in zip(rois, cls_scores, bbox_preds, metas)]
        preds = _stack_padded(per_image)
        preds.proposals = _pad(boxes, float('nan'))
        if self.with_mask or self.roi_kind == 'grid':
            # the mask (grid) head pools the chosen boxes from the same levels
            preds.mask_source = tuple(feats)
        return [preds]

    def _decode(self, roi: Tensor, cls: Tensor, pred: Optional[Tensor], meta: dict,
                classes: Optional[Tensor]) -> dict:
        """One image's RoIs as ``BBoxHead._predict_by_feat_single`` decodes them, unfiltered."""
        head = self.head
        num_rois, num_classes = cls.shape[0], head.num_classes
        confidence, decoded_classes = None, False
        if pred is not None and _is_sabl(head):
            # one box per RoI and a localization confidence that multiclass_nms multiplies
            # into the class scores after its threshold (SABLHead._predict_by_feat_single)
            boxes, confidence = head.bbox_coder.decode(roi[:, 1:], pred, meta['img_shape'])
            boxes = boxes[:, None].expand(num_rois, num_classes, 4)
        elif pred is not None:
            per_class = 1 if head.reg_class_agnostic else num_classes
            deltas = pred.reshape(num_rois, per_class, head.bbox_coder.encode_size)
            if classes is not None and per_class > 1:
                # only the asked classes' boxes (each decoded from its own deltas, as in the
                # full decoding): re-scoring n copies with 1203 LVIS classes otherwise
                # decodes n x R x 1203 boxes
                deltas, decoded_classes = deltas[:, classes], True
            boxes = head.bbox_coder.decode(
                roi[:, 1:].repeat_interleave(deltas.shape[1], dim=0),
                deltas.reshape(-1, head.bbox_coder.encode_size), max_shape=meta['img_shape'])
            boxes = boxes.reshape(num_rois, deltas.shape[1], 4)
            if per_class == 1:
                boxes = boxes.expand(num_rois, num_classes, 4)
        else:  # a head without regression (Grid R-CNN's): the RoI itself, clipped
            boxes = roi[:, 1:].clone()
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, meta['img_shape'][1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, meta['img_shape'][0])
            boxes = boxes[:, None].expand(num_rois, num_classes, 4)
        if _is_seesaw(head):
            # the loss's own activation (BBoxHead._predict_by_feat_single calls it): softmax
            # over the classes times softmax over the two objectness columns' first, that is
            # sigmoid(o_pos - o_neg); the logit target adds that objectness logit
            classes_logits, objectness = head.loss_cls._split_cls_score(cls)
            objectness = objectness[:, 0] - objectness[:, 1]
            scores = head.loss_cls.get_activation(cls)[:, :num_classes]
            log_scores = F.log_softmax(classes_logits, dim=-1) + \
                F.logsigmoid(objectness)[:, None]
            logits = classes_logits + objectness[:, None]
        elif _is_sigmoid_custom_ce(head):
            # CrossEntropyCustomLoss.get_activation with use_sigmoid: a sigmoid per class (its
            # last column, 1 - their sum, is the background multiclass_nms drops)
            logits = cls[:, :num_classes]
            scores, log_scores = logits.sigmoid(), F.logsigmoid(logits)
        else:
            logits = cls[:, :num_classes]
            scores = F.softmax(cls, dim=-1)[:, :num_classes]
            log_scores = F.log_softmax(cls, dim=-1)[:, :num_classes]
        if classes is not None:
            logits, scores, log_scores = logits[:, classes], scores[:, classes], \
                log_scores[:, classes]
            if not decoded_classes:
                boxes = boxes[:, classes]
        # each RoI's box of its best (asked) class
        best = scores.detach().argmax(dim=1)
        top_boxes = boxes[torch.arange(num_rois, device=boxes.device), best]
        out = dict(scores=scores, log_scores=log_scores, logits=logits, boxes=top_boxes,
                   class_boxes=boxes)
        if confidence is not None:
            # the confidence is a mean of bucket probabilities (no logit of its own): it
            # enters the score and log score; the logit target stays the class logit
            out.update(class_scores=scores, score_factors=confidence,
                       scores=scores * confidence[:, None],
                       log_scores=log_scores + confidence.log()[:, None])
        return out

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """``multiclass_nms`` of the head (``rcnn`` test config) on each image's RoIs, with
        the kept (RoI, class) indices; then the detections above ``score_thr``, the ``topk``
        best (``<= 0``: all). With a mask head each detection gets its mask from the RoI
        head's own ``predict_mask`` (on the network input).

        As ``BaseRoIHead.predict`` does, the boxes are rescaled to the original image before
        the NMS only without a mask head (a mask head rescales boxes and masks together
        afterwards, so Mask R-CNN's NMS compares boxes on the network input). Grid R-CNN's
        NMS also compares boxes on the network input; its grid head then moves the kept
        boxes (:meth:`_grid_boxes`)."""
        from mmdet.models.layers import multiclass_nms
        from mmdet.structures.bbox import scale_boxes
        cfg = self.test_cfg
        out = []
        for b in range(preds.scores.shape[0]):
            valid = preds.valid[b] if preds.valid is not None else slice(None)
            factors = None
            if preds.score_factors is not None:  # SABL: threshold, then the product
                scores = preds.class_scores[b][valid].detach()
                factors = preds.score_factors[b][valid].detach()
            else:
                scores = preds.scores[b][valid].detach()
            boxes = preds.class_boxes[b][valid].detach()
            num_rois, num_classes = scores.shape
            meta = None if metas is None else metas[b]
            if meta is not None and meta.get('scale_factor') is not None and \
                    not getattr(self.roi_head, 'with_mask', False) and self.roi_kind != 'grid':
                boxes = scale_boxes(boxes.reshape(-1, 4), [1 / s for s in meta['scale_factor']])
            # multiclass_nms drops the last score column (the background)
            with_bg = torch.cat([scores, scores.new_zeros((num_rois, 1))], dim=1)
            if num_rois == 0:  # no proposal (MMDetection gives the image empty instances)
                rois = labels = torch.zeros(0, dtype=torch.long, device=scores.device)
                dets = scores.new_zeros((0, 5))
            else:
                dets, labels, inds = multiclass_nms(boxes.reshape(num_rois, -1), with_bg,
                                                    cfg['score_thr'], cfg['nms'],
                                                    cfg['max_per_img'], score_factors=factors,
                                                    return_inds=True)
                rois = inds // num_classes
            det_scores = dets[:, -1]
            above = det_scores > score_thr
            rois, labels, det_scores = rois[above], labels[above], det_scores[above]
            if topk > 0:
                rois, labels, det_scores = rois[:topk], labels[:topk], det_scores[:topk]
            det = ExplainedBoxes(boxes=preds.class_boxes[b, rois, labels].detach(),
                                 scores=det_scores, labels=labels, priors=rois,
                                 levels=torch.zeros_like(rois))
            if self.roi_kind == 'grid':
                det.boxes = self._grid_boxes(preds.mask_source, b, det, meta)
            if self.with_mask and preds.mask_source is not None:
                det.masks = self._masks(preds.mask_source, b, det, meta)
            out.append(det)
        return out

    def _grid_boxes(self, feats, b: int, det: ExplainedBoxes, meta: Optional[dict]) -> Tensor:
        """``(K, 4)`` image ``b``'s detections moved by Grid R-CNN's grid head, on the network
        input: ``GridRoIHead.predict_bbox``'s steps after its NMS (grid RoI features, shared
        head, grid head) and the grid head's own ``predict_by_feat``. Each box is refined
        from its own RoI features, so refining the kept boxes only gives the same boxes."""
        from mmdet.structures.bbox import bbox2roi
        from mmengine.structures import InstanceData
        if len(det) == 0:
            return det.boxes
        if meta is None:
            height, width = feats[0].shape[-2] * self._stride, feats[0].shape[-1] * self._stride
            meta = default_metas(1, height, width)[0]
        roi_head = self.roi_head
        levels = tuple(f[min(b, f.shape[0] - 1)][None].contiguous()
                       for f in feats[:len(roi_head.grid_roi_extractor.featmap_strides)])
        with torch.no_grad():
            grid_feats = roi_head.grid_roi_extractor(levels, bbox2roi([det.boxes]))
            if roi_head.with_shared_head:
                grid_feats = roi_head.shared_head(grid_feats)
            grid_preds = roi_head.grid_head(grid_feats)
            (result, ) = roi_head.grid_head.predict_by_feat(
                grid_preds=grid_preds, results_list=[InstanceData(bboxes=det.boxes.clone())],
                batch_img_metas=[meta], rescale=False)
        return result.bboxes

    def rescore(self, feats, classes: Tensor, dets: ExplainedBoxes, match_iou_thr: float,
                metas: Optional[Sequence[dict]] = None,
                proposals: Optional[Tensor] = None) -> Tensor:
        """As :meth:`ExplainableDetector.rescore`; with fixed ``proposals`` a Grid R-CNN box
        is matched by its own RoI (its candidate's box: the RPN clips it to the image), not by
        the box the grid head moved."""
        if self.roi_kind == 'grid' and proposals is not None and len(dets):
            dets = replace(dets, boxes=proposals[0][dets.priors])
        return super().rescore(feats, classes, dets, match_iou_thr, metas, proposals)

    def _masks(self, feats, b: int, det: ExplainedBoxes, meta: Optional[dict]) -> Tensor:
        """``(K, H, W)`` masks of image ``b``'s detections on the network input: the RoI
        head's own ``predict_mask`` (mask RoIs, mask head, pasting at ``img_shape``,
        ``mask_thr_binary``), padded to the input."""
        from mmengine.structures import InstanceData
        height, width = feats[0].shape[-2] * self._stride, feats[0].shape[-1] * self._stride
        if meta is None:
            meta = default_metas(1, height, width)[0]
        size = tuple(meta.get('batch_input_shape') or (height, width))
        instances = InstanceData(bboxes=det.boxes.clone(), labels=det.labels,
                                 scores=det.scores)
        with torch.no_grad():
            (result, ) = self.roi_head.predict_mask(
                tuple(f[min(b, f.shape[0] - 1)][None].contiguous() for f in feats), [meta],
                [instances], rescale=False)
        return pad_masks(result.masks, size)

    @property
    def _stride(self) -> int:
        """Stride of the finest feature level (the RPN's first)."""
        return int(self.model.rpn_head.prior_generator.strides[0][0])

    def forward(self, inputs: Tensor):
        """The network with the default metainfo (slicing: every slice fills the input)."""
        return inputs

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """MMDetection's own prediction (RPN, RoI head, NMS) of the batch ``outs`` (the
        preprocessed inputs: a two-stage detector needs the metainfo in its forward), given
        contiguous: a channels-last batch would reach RoIAlign as channels-last features (see
        :meth:`_roi_outputs`)."""
        return decode_by_predict(self.model, self.roi_head, outs.contiguous(), metas, cfg)


def _pad(tensors: Sequence[Tensor], value: float) -> Tensor:
    """``(B, max R, ...)`` from per-image ``(R_b, ...)`` tensors, padded with ``value``."""
    size = max(t.shape[0] for t in tensors)
    return torch.stack([F.pad(t, [0, 0] * (t.dim() - 1) + [0, size - t.shape[0]], value=value)
                        for t in tensors])


def _stack_padded(per_image: Sequence[dict]) -> FlatPredictions:
    """One FlatPredictions for images with different RoI counts: padded RoIs score 0 (log
    score and logit -inf) and are marked invalid."""
    counts = [d['scores'].shape[0] for d in per_image]
    size = max(counts)

    def optional(name: str, value: float) -> Optional[Tensor]:
        return _pad([d[name] for d in per_image], value) if name in per_image[0] else None
    valid = torch.zeros((len(counts), size), dtype=torch.bool,
                        device=per_image[0]['scores'].device)
    for b, count in enumerate(counts):
        valid[b, :count] = True
    return FlatPredictions(
        scores=_pad([d['scores'] for d in per_image], 0.0),
        log_scores=_pad([d['log_scores'] for d in per_image], float('-inf')),
        logits=_pad([d['logits'] for d in per_image], float('-inf')),
        boxes=_pad([d['boxes'] for d in per_image], 0.0),
        levels=torch.zeros(size, dtype=torch.long, device=valid.device),
        class_boxes=_pad([d['class_boxes'] for d in per_image], 0.0),
        score_factors=optional('score_factors', 0.0),
        class_scores=optional('class_scores', 0.0),
        valid=None if all(c == size for c in counts) else valid)

"""MMDetection's own single-stage instance segmentation with boxes: RTMDet-ins
(``RTMDetInsHead`` and its ``RTMDetInsSepBNHead``) and YOLACT (``YOLACTHead`` with the
``YOLACTProtonet`` mask head; :class:`YOLACTDetector`, described there).

The head is MMDetection's RTMDet head plus, per prior, the parameters of a small dynamic
convolution (``kernel_preds``) that runs on an image-level ``mask_feat`` with the coordinates
relative to the prior. Its ``_predict_by_feat_single`` keeps and decodes the boxes exactly as
``BaseDenseHead``'s (``filter_scores_and_topk`` per level, ``bbox_coder.decode`` on the priors'
centres), and ``_bbox_mask_post_process`` rescales, drops small boxes, runs ``batched_nms`` and
keeps ``max_per_img`` as ``_bbox_post_process`` does; only then does it decode the kept
detections' masks (``_mask_predict_by_feat_single``, upsampled by the finest stride, a sigmoid
and ``mask_thr_binary``).

So the candidates and their selection are the MMDetection dense kind's (:mod:`.mmdet_dense`),
an instance's target is its candidate's class score as for its box, and
:meth:`MMDetInstanceDetector.select` gives each chosen detection its mask from the head's own
``_mask_predict_by_feat_single``, on the network input (``_bbox_mask_post_process`` with
``rescale=False``).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import (ExplainedBoxes, FlatPredictions, UnsupportedDetectorError, explained_boxes,
                   pad_masks, upsampled_masks)
from .mmdet_dense import MMDetDenseDetector


def rtmdet_ins_head_class() -> type:
    from mmdet.models.dense_heads import RTMDetInsHead
    return RTMDetInsHead


def has_rtmdet_ins_decoding(head: nn.Module) -> bool:
    """Whether ``head`` is an ``RTMDetInsHead`` (or subclass) decoding with its methods."""
    base = rtmdet_ins_head_class()
    cls = type(head)
    return isinstance(head, base) and all(
        getattr(cls, name) is getattr(base, name)
        for name in ('predict_by_feat', '_predict_by_feat_single', '_bbox_mask_post_process',
                     '_mask_predict_by_feat_single'))


class MMDetInstanceDetector(MMDetDenseDetector):
    """MMDetection's RTMDet-ins: boxes as the dense kind, plus masks."""

    kind = 'MMDetection instance-segmentation head'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if not has_rtmdet_ins_decoding(self.head):
            raise UnsupportedDetectorError(
                f'{type(self.head).__name__} decodes its masks its own way; MMDetection '
                f'instance masks support RTMDetInsHead and RTMDetInsSepBNHead')

    @property
    def predicts_masks(self) -> bool:
        return True

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        # its mask feature head fuses every level: a level perturbed for n copies beside
        # unchanged ones at batch 1 (the contract's re-scoring) needs them all at n
        batch = max(f.shape[0] for f in feats)
        feats = [f.expand(batch, *f.shape[1:]) for f in feats]
        return super().level_candidates(feats, classes, metas, proposals)

    def _output_candidates(self, outputs, classes: Optional[Tensor],
                           metas: Sequence[dict]) -> List[FlatPredictions]:
        """The dense kind's candidates of ``(cls, bbox)``, each with its dynamic-convolution
        parameters (flattened as ``_predict_by_feat_single`` does), and the mask features
        with every prior's (x, y, stride_x, stride_y) on the first level; of ``(cls, bbox)``
        alone, boxes only."""
        if len(outputs) == 2:
            return super()._output_candidates(outputs, classes, metas)
        if len(outputs) != 4:
            raise ValueError(f'{type(self.head).__name__} returned {len(outputs)} outputs; an '
                             f'eval-mode RTMDet-ins head returns (cls, bbox, kernels, '
                             f'mask_feat). Is the head in training mode?')
        cls_scores, bbox_preds, kernels, mask_feat = outputs
        per_level = super()._output_candidates((cls_scores, bbox_preds), classes, metas)
        size = self.head.num_gen_params
        for preds, kernel in zip(per_level, kernels):
            preds.mask_coeffs = kernel.permute(0, 2, 3, 1).reshape(kernel.shape[0], -1, size)
        priors = torch.cat(self.head.prior_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], dtype=mask_feat.dtype,
            device=mask_feat.device, with_stride=True))
        per_level[0].mask_source = (mask_feat, priors)
        return per_level

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        """The dense kind's selection, then each detection's mask on the network input
        (``(H, W)`` = ``batch_input_shape`` of ``metas``, else the finest level's size times
        its stride)."""
        out = super().select(preds, score_thr, topk, metas, cfg)
        if preds.mask_source is None or preds.mask_coeffs is None:
            return out
        cfg = self.test_cfg if cfg is None else cfg
        mask_feat, priors = preds.mask_source
        stride = self.head.prior_generator.strides[0][0]
        with torch.no_grad():
            for b, det in enumerate(out):
                meta = None if metas is None else metas[b]
                size = self._mask_input_size(mask_feat, stride, meta)
                kernels = preds.mask_coeffs[min(b, preds.mask_coeffs.shape[0] - 1)]
                logits = self.head._mask_predict_by_feat_single(
                    mask_feat[min(b, mask_feat.shape[0] - 1)].detach(),
                    kernels[det.priors].detach(), priors[det.priors])
                det.masks = upsampled_masks(logits, stride, cfg['mask_thr_binary'], size)
        return out

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The dense kind's decoding of the boxes (its callers read boxes only: no masks)."""
        return super().decode(outs[:2], metas, cfg)

    @staticmethod
    def _mask_input_size(mask_feat: Tensor, stride: int, meta: Optional[dict]
                         ) -> Tuple[int, int]:
        if meta is not None and meta.get('batch_input_shape') is not None:
            return tuple(int(v) for v in meta['batch_input_shape'][:2])
        return int(mask_feat.shape[-2] * stride), int(mask_feat.shape[-1] * stride)


def has_yolact_decoding(model: nn.Module) -> bool:
    """Whether ``model`` is a YOLACT whose ``YOLACTHead`` (or subclass) and
    ``YOLACTProtonet`` decode with their own methods."""
    from mmdet.models.dense_heads import YOLACTHead, YOLACTProtonet
    head, mask_head = getattr(model, 'bbox_head', None), getattr(model, 'mask_head', None)
    if not isinstance(head, YOLACTHead) or not isinstance(mask_head, YOLACTProtonet):
        return False
    return all(getattr(type(head), name) is getattr(YOLACTHead, name)
               for name in ('predict_by_feat', '_predict_by_feat_single', '_bbox_post_process')
               ) and all(getattr(type(mask_head), name) is getattr(YOLACTProtonet, name)
                         for name in ('forward', 'predict_by_feat', '_predict_by_feat_single',
                                      'crop_mask_preds'))


class YOLACTDetector(MMDetDenseDetector):
    """MMDetection's YOLACT: the anchors, softmax classes and box decoding of the dense kind;
    the head's own selection (``nms_pre`` candidates per level by their best class score,
    then ``fast_nms``) and masks from the ``YOLACTProtonet`` (prototypes x the candidates'
    coefficients, cropped to the box, resized to the image content)."""

    kind = 'MMDetection YOLACT'

    @property
    def predicts_masks(self) -> bool:
        return True

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        per_level = super().level_candidates(feats, classes, metas, proposals)
        per_level[0].mask_source = tuple(feats)  # the protonet reads the finest level
        return per_level

    def _output_candidates(self, outputs, classes: Optional[Tensor],
                           metas: Sequence[dict]) -> List[FlatPredictions]:
        """The dense kind's candidates of ``(cls, bbox)``, each with its mask coefficients
        (``(cls, bbox, coeffs)`` is what the head returns: no score factor)."""
        cls_scores, bbox_preds, coeffs = outputs
        per_level = super()._output_candidates((cls_scores, bbox_preds), classes, metas)
        for preds, coeff in zip(per_level, coeffs):
            preds.mask_coeffs = coeff.permute(0, 2, 3, 1).reshape(
                coeff.shape[0], -1, self.head.num_protos)
        return per_level

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        """``_predict_by_feat_single`` and ``_bbox_post_process`` (boxes rescaled for the
        NMS, as ``predict`` does) keeping each detection's prior: mmdet's own ``fast_nms``
        carries the prior indices beside the coefficients. Then the detections scoring above
        ``score_thr``, the ``topk`` best (``<= 0``: all), with their masks on the network
        input where the candidates carry the features."""
        from mmdet.models.layers import fast_nms
        cfg = self.test_cfg if cfg is None else cfg
        nms_pre = cfg.get('nms_pre', -1)
        batch = preds.scores.shape[0]
        metas = list(metas) if metas is not None else [None] * batch
        out = []
        for b in range(batch):
            scores = preds.scores[min(b, batch - 1)].detach()
            chosen = []
            for level in range(int(preds.levels.max()) + 1 if preds.levels.numel() else 0):
                index = (preds.levels == level).nonzero(as_tuple=True)[0]
                if 0 < nms_pre < len(index):
                    index = index[scores[index].max(dim=1)[0].topk(nms_pre)[1]]
                chosen.append(index)
            chosen = torch.cat(chosen)
            boxes = preds.boxes[b].detach()[chosen]
            meta = metas[b]
            if meta is not None and meta.get('scale_factor') is not None:
                boxes = boxes / boxes.new_tensor(meta['scale_factor']).repeat((1, 2))
            background = scores.new_zeros(len(chosen), 1)  # fast_nms drops the last column
            carried = chosen[:, None].to(scores.dtype)  # exact below 2**24 candidates
            dets, labels, kept = fast_nms(boxes, torch.cat([scores[chosen], background], 1),
                                          carried, cfg['score_thr'], cfg['iou_thr'],
                                          cfg['top_k'], cfg['max_per_img'])
            priors = kept[:, 0].long()
            det_scores = dets[:, -1]
            det = explained_boxes(preds, b, det_scores, labels, priors, score_thr, topk)
            if preds.mask_source is not None and preds.mask_coeffs is not None:
                det.masks = self._masks(preds, b, det, meta)
            out.append(det)
        return out

    def forward(self, inputs: Tensor):
        """Backbone, neck and box head: what :meth:`decode` reads (YOLACT's ``mode='tensor'``
        forward runs the box head's loss too, which needs ground truth)."""
        return self.head(self.model.extract_feat(inputs))

    def _masks(self, preds: FlatPredictions, b: int, det: ExplainedBoxes,
               meta: Optional[dict]) -> Tensor:
        """The protonet's own masks of the detections (``predict_by_feat`` with
        ``rescale=False``: on the image content), padded to the network input."""
        from mmengine.structures import InstanceData
        feats = tuple(f[min(b, f.shape[0] - 1)][None].detach() for f in preds.mask_source)
        height, width = feats[0].shape[-2:]
        stride = self.head.prior_generator.strides[0]
        size = (int(height * stride[1]), int(width * stride[0]))
        if meta is None:
            meta = dict(img_shape=size, ori_shape=size, scale_factor=(1.0, 1.0))
        elif meta.get('batch_input_shape') is not None:
            size = tuple(int(v) for v in meta['batch_input_shape'][:2])
        if len(det) == 0:
            return torch.zeros((0, *size), dtype=torch.bool, device=det.boxes.device)
        coeffs = preds.mask_coeffs[min(b, preds.mask_coeffs.shape[0] - 1)][det.priors]
        info = InstanceData(bboxes=det.boxes.clone(), scores=det.scores, labels=det.labels,
                            coeffs=coeffs.detach())
        mask_head = self.model.mask_head
        with torch.no_grad():
            mask_preds, segm_preds = mask_head(feats, [info])
            (result, ) = mask_head.predict_by_feat(mask_preds, segm_preds, [info], [meta],
                                                   rescale=False)
        return pad_masks(result.masks, size)

"""MMDetection's own RTMDet-ins (``RTMDetInsHead`` and its ``RTMDetInsSepBNHead``).

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

from .base import ExplainedBoxes, FlatPredictions, UnsupportedDetectorError, upsampled_masks
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

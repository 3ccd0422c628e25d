"""MMYOLO's instance-segmentation heads: YOLOv5-ins (``YOLOv5InsHead``) and RTMDet-ins
(MMYOLO's ``RTMDetInsSepBNHead``).

Both are their detection heads (YOLOv5, RTMDet) plus per-candidate mask parameters and an
image-level mask source, and both decode a detection's mask only after the box NMS:

- ``YOLOv5InsHead`` returns ``(cls, bbox, objectness, coeffs, protos)``: every prior has
  ``mask_channels`` coefficients, the prototypes are one ``(mask_channels, h, w)`` map at the
  finest level's resolution (x2). ``predict_by_feat`` multiplies the kept candidates'
  coefficients by their objectness and calls ``process_mask`` (coefficients x prototypes,
  sigmoid, bilinear upsampling to the batch input, cropped to the box), thresholded at
  ``test_cfg.mask_thr_binary``.
- ``RTMDetInsSepBNHead`` returns ``(cls, bbox, kernels, mask_feat)``: every prior has the
  parameters of a small dynamic convolution that runs on ``mask_feat`` with the coordinates
  relative to the prior (``_mask_predict_by_feat``); the mask logits are upsampled by the
  finest stride to the input and thresholded after a sigmoid.

The box candidates and their selection are the detection kind's (``mmyolo_dense``): the same
class scores, objectness and decoded boxes, so an instance's target is its candidate's class
score exactly as for its box. :meth:`MMYOLOInstanceDetector.select` then gives each chosen
detection its mask from the head's own mask methods above, on the network input (the
``predict_by_feat`` masks before they are cropped and resized to the original image).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import (ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   decode_with_predict_by_feat, upsampled_masks)
from .mmyolo_dense import MMYOLODenseDetector, level_predictions, select_boxes

# The instance heads this kind explains (mmyolo.models.dense_heads), by class name.
HEAD_NAMES = ('YOLOv5InsHead', 'RTMDetInsSepBNHead')


def head_classes() -> Tuple[type, ...]:
    """MMYOLO's supported instance-segmentation head classes."""
    from mmyolo.models import dense_heads
    return tuple(getattr(dense_heads, name) for name in HEAD_NAMES)


def instance_head_kind(head: nn.Module) -> Optional[str]:
    """``'yolov5'`` or ``'rtmdet'`` when ``head`` decodes its masks like ``YOLOv5InsHead`` or
    ``RTMDetInsSepBNHead`` (their own ``predict_by_feat`` and mask methods), else None."""
    from mmyolo.models.dense_heads import RTMDetInsSepBNHead, YOLOv5InsHead
    cls = type(head)
    if isinstance(head, YOLOv5InsHead) and cls.predict_by_feat is \
            YOLOv5InsHead.predict_by_feat and cls.process_mask is YOLOv5InsHead.process_mask:
        return 'yolov5'
    if isinstance(head, RTMDetInsSepBNHead) and cls.predict_by_feat is \
            RTMDetInsSepBNHead.predict_by_feat and \
            cls._mask_predict_by_feat is RTMDetInsSepBNHead._mask_predict_by_feat:
        return 'rtmdet'
    return None


class MMYOLOInstanceDetector(MMYOLODenseDetector):
    """MMYOLO's YOLOv5-ins and RTMDet-ins: boxes as their detection heads, plus masks."""

    kind = 'MMYOLO instance-segmentation head'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.mask_kind = instance_head_kind(self.head)
        if self.mask_kind is None:
            raise UnsupportedDetectorError(
                f'{type(self.head).__name__} decodes its masks its own way; MMYOLO instance '
                f'masks support {", ".join(HEAD_NAMES)}')

    @property
    def predicts_masks(self) -> bool:
        return True

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        if self.mask_kind == 'rtmdet':
            # its mask head fuses every level: a level perturbed for n copies beside
            # unchanged ones at batch 1 (the contract's re-scoring) needs them all at n
            batch = max(f.shape[0] for f in feats)
            feats = [f.expand(batch, *f.shape[1:]) for f in feats]
        outputs = self.head(tuple(feats))
        if self.mask_kind == 'yolov5':
            box_outputs, coeffs, source = outputs[:3], outputs[3], outputs[4]
        else:
            box_outputs, coeffs, source = outputs[:2], outputs[2], outputs[3]
        per_level = level_predictions(self.head, box_outputs, classes=classes)
        # flattened as predict_by_feat does: (h, w, prior) order, one row per candidate
        size = self.head.head_module.mask_channels if self.mask_kind == 'yolov5' else \
            self.head.head_module.num_gen_params
        for preds, coeff in zip(per_level, coeffs):
            preds.mask_coeffs = coeff.permute(0, 2, 3, 1).reshape(coeff.shape[0], -1, size)
        if self.mask_kind == 'rtmdet':  # the dynamic convolutions read each prior's centre
            priors = torch.cat(self.head.prior_generator.grid_priors(
                [c.shape[-2:] for c in box_outputs[0]], dtype=source.dtype,
                device=source.device, with_stride=True))
            source = (source, priors[None])
        per_level[0].mask_source = source
        return per_level

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """The detection kind's selection, then each detection's mask on the network input
        (``(H, W)`` = ``batch_input_shape`` of ``metas``, else the size the finest level's
        stride gives)."""
        out = select_boxes(preds, self.test_cfg, score_thr, topk, metas)
        if preds.mask_source is None or preds.mask_coeffs is None:
            return out
        with torch.no_grad():
            for b, det in enumerate(out):
                det.masks = self._masks(preds, b, det, None if metas is None else metas[b])
        return out

    def _input_size(self, preds: FlatPredictions, meta: Optional[dict]) -> Tuple[int, int]:
        if meta is not None and meta.get('batch_input_shape') is not None:
            return tuple(int(v) for v in meta['batch_input_shape'][:2])
        source = preds.mask_source[0] if isinstance(preds.mask_source, tuple) \
            else preds.mask_source
        # prototypes / mask features: YOLOv5's at half the finest stride, RTMDet's at it
        scale = self.strides[0] // (2 if self.mask_kind == 'yolov5' else 1)
        return int(source.shape[-2] * scale), int(source.shape[-1] * scale)

    def _masks(self, preds: FlatPredictions, b: int, det: ExplainedBoxes,
               meta: Optional[dict]) -> Tensor:
        head, cfg = self.head, self.test_cfg
        size = self._input_size(preds, meta)
        coeffs = preds.mask_coeffs[min(b, preds.mask_coeffs.shape[0] - 1)][det.priors].detach()
        if len(det) == 0:
            return torch.zeros((0, *size), dtype=torch.bool, device=coeffs.device)
        if self.mask_kind == 'yolov5':
            protos = preds.mask_source
            protos = protos[min(b, protos.shape[0] - 1)].detach()
            if preds.objectness is not None:  # as predict_by_feat: coefficients x objectness
                objectness = preds.objectness[min(b, preds.objectness.shape[0] - 1)]
                coeffs = coeffs * objectness[det.priors].detach()[:, None]
            probs = head.process_mask(protos, coeffs, det.boxes.detach(), size, True)[0]
            return probs > cfg['mask_thr_binary']
        mask_feat, priors = preds.mask_source
        mask_feat = mask_feat[min(b, mask_feat.shape[0] - 1)].detach()
        logits = head._mask_predict_by_feat(mask_feat, coeffs, priors[0][det.priors])
        return upsampled_masks(logits, head.prior_generator.strides[0][0],
                               cfg['mask_thr_binary'], size)

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The head's own ``predict_by_feat`` (boxes; the masks are left out)."""
        return self.decode_unbatched(outs, metas, cfg)

    def decode_unbatched(self, outs, metas: List[dict], cfg: dict
                         ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        return decode_with_predict_by_feat(self.head, outs, metas, cfg)

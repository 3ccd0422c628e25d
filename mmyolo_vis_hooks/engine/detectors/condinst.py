"""MMDetection's CondInst and BoxInst: an FCOS box head whose points also predict the
parameters of a dynamic mask head (``CondInstBboxHead``, ``BoxInstBboxHead``), and the
``CondInstMaskHead`` (``BoxInstMaskHead``: the same prediction) that runs those parameters on
an image-level mask feature with each point's relative coordinates.

The box head's ``_predict_by_feat_single`` is FCOS's (``BaseDenseHead``'s): per level the
(point, class) pairs above ``score_thr``, the ``nms_pre`` best (``filter_scores_and_topk``),
``bbox_coder.decode`` on the points, times ``sigmoid(centerness)``, then
``_bbox_post_process``; it only carries each kept point's parameters, position and stride
along for the mask head. The detector's ``predict`` runs the box head with ``rescale=False``
(the mask head rescales boxes and masks afterwards), so the NMS sees boxes in network-input
pixels, not rescaled ones.

So the candidates are the MMDetection dense kind's (:mod:`.mmdet_dense`) with each point's
parameters as its mask coefficients, a detection's target is its point's class score (times
centerness, as for FCOS), and :meth:`CondInstDetector.select` gives each chosen detection its
mask from the mask head's own ``forward`` and ``predict_by_feat`` (``rescale=False``: on the
image content, padded to the network input).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .base import ExplainedBoxes, FlatPredictions, default_metas, explained_boxes, pad_masks
from .mmdet_dense import MMDetDenseDetector, _flat, bbox_post_process


def has_condinst_decoding(model: nn.Module) -> bool:
    """Whether ``model`` is a CondInst/BoxInst whose ``CondInstBboxHead`` and
    ``CondInstMaskHead`` (or subclasses) decode with their own methods."""
    from mmdet.models.dense_heads import CondInstBboxHead, CondInstMaskHead
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    head, mask_head = getattr(model, 'bbox_head', None), getattr(model, 'mask_head', None)
    if not isinstance(head, CondInstBboxHead) or not isinstance(mask_head, CondInstMaskHead):
        return False
    return all(getattr(type(head), name) is getattr(CondInstBboxHead, name)
               for name in ('forward_single', 'predict_by_feat', '_predict_by_feat_single')
               ) and type(head)._bbox_post_process is BaseDenseHead._bbox_post_process and \
        all(getattr(type(mask_head), name) is getattr(CondInstMaskHead, name)
            for name in ('forward', 'forward_single', 'predict_by_feat',
                         '_predict_by_feat_single'))


class CondInstDetector(MMDetDenseDetector):
    """MMDetection's CondInst and BoxInst: FCOS boxes as the dense kind, the NMS on
    network-input boxes, masks from the dynamic mask head."""

    kind = 'MMDetection CondInst'

    @property
    def predicts_masks(self) -> bool:
        return True

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        per_level = super().level_candidates(feats, classes, metas, proposals)
        per_level[0].mask_source = tuple(feats)  # the mask head's feature module reads them
        return per_level

    def _output_candidates(self, outputs, classes: Optional[Tensor],
                           metas: Sequence[dict], level_logits=None) -> List[FlatPredictions]:
        """The dense kind's candidates of ``(cls, bbox, centerness)``, each point with its
        dynamic-convolution parameters (flattened as ``_predict_by_feat_single`` does) when
        the head's ``param_preds`` are given."""
        if len(outputs) != 4:
            return super()._output_candidates(outputs, classes, metas, level_logits)
        per_level = super()._output_candidates(outputs[:3], classes, metas, level_logits)
        for preds, params in zip(per_level, outputs[3]):
            preds.mask_coeffs = _flat(params, self.head.num_params)
        return per_level

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        """The box head's own post-processing as ``predict`` runs it (``rescale=False``: the
        NMS on network-input boxes), keeping each detection's point and class; then the
        detections above ``score_thr``, the ``topk`` best (``<= 0``: all), with their masks
        where the candidates carry the features and parameters."""
        cfg = self.test_cfg if cfg is None else cfg
        batch = preds.scores.shape[0]
        metas = list(metas) if metas is not None else [None] * batch
        out = []
        for b in range(batch):
            scores, labels, priors, factors = self._filter(preds, b, cfg)
            scores, labels, priors = bbox_post_process(preds.boxes[b].detach(), scores,
                                                       labels, priors, factors, None, cfg)
            det = explained_boxes(preds, b, scores, labels, priors, score_thr, topk)
            if preds.mask_source is not None and preds.mask_coeffs is not None:
                det.masks = self._masks(preds, b, det, metas[b])
            out.append(det)
        return out

    def _masks(self, preds: FlatPredictions, b: int, det: ExplainedBoxes,
               meta: Optional[dict]) -> Tensor:
        """The mask head's own masks of the detections (``forward`` on their points'
        parameters, positions and strides, then ``predict_by_feat`` with ``rescale=False``:
        on the image content), padded to the network input."""
        from mmengine.structures import InstanceData
        feats = tuple(f[min(b, f.shape[0] - 1)][None].detach() for f in preds.mask_source)
        size = self._input_size(feats)
        if meta is None:
            meta = default_metas(1, *size)[0]
        elif meta.get('batch_input_shape') is not None:
            size = tuple(int(v) for v in meta['batch_input_shape'][:2])
        if len(det) == 0:
            return torch.zeros((0, *size), dtype=torch.bool, device=det.boxes.device)
        points = torch.cat(self.head.prior_generator.grid_priors(
            [f.shape[-2:] for f in feats], dtype=feats[0].dtype, device=feats[0].device,
            with_stride=True))[det.priors]
        params = preds.mask_coeffs[min(b, preds.mask_coeffs.shape[0] - 1)][det.priors]
        info = InstanceData(bboxes=det.boxes.clone(), scores=det.scores, labels=det.labels,
                            param_preds=params.detach(), points=points[:, :2],
                            strides=points[:, 2])
        mask_head = self.model.mask_head
        with torch.no_grad():
            (mask_preds, ) = mask_head(feats, [info])
            (result, ) = mask_head.predict_by_feat(mask_preds, [info], [meta], rescale=False)
        return pad_masks(result.masks, size)

    # ------------------------------------------------------------ batched inference
    def forward(self, inputs: Tensor):
        """The backbone, neck and box head (the detector's ``'tensor'`` mode needs data
        samples here)."""
        return self.head(self.model.extract_feat(inputs))

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The boxes of ``predict``: the selection on network-input boxes, then rescaled
        (its callers read boxes only: no masks)."""
        return super().decode(outs[:3], metas, cfg)

    def decode_unbatched(self, outs, metas: List[dict], cfg: dict
                         ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The box head's own ``predict_by_feat(rescale=False)``, then rescaled as the mask
        head does."""
        results = self.head.predict_by_feat(*outs, batch_img_metas=metas, cfg=cfg,
                                            rescale=False)
        boxes = [res.bboxes / res.bboxes.new_tensor(meta['scale_factor']).repeat((1, 2))
                 for res, meta in zip(results, metas)]
        return (torch.cat(boxes), torch.cat([res.scores for res in results]),
                torch.cat([res.labels for res in results]), [len(res) for res in results])

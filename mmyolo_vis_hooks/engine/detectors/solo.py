"""MMDetection's SOLO and SOLOv2: instance segmentation without a box branch
(``SOLOHead``, ``SOLOV2Head``; the detector's ``mask_head``, no ``bbox_head``).

Per level the head divides the image into a ``num_grids`` x ``num_grids`` grid; each cell has
class logits (``conv_cls``) and a mask: SOLO predicts one mask channel per cell
(``conv_mask_list``, in eval mode already a sigmoid upsampled to the mask size), SOLOv2 a
dynamic kernel per cell (``conv_kernel``) convolved with an image-level mask feature. The
scores are ``sigmoid(logit)`` zeroed where the cell is not a 2x2 local maximum of its class
(points NMS: SOLO's ``forward``, SOLOv2's ``predict_by_feat``). ``_predict_by_feat_single``
keeps the (cell, class) pairs above ``score_thr``, drops masks (``> mask_thr``) not larger
than their level's stride, multiplies each score by its maskness (the mean probability inside
the mask), runs ``mask_matrix_nms`` (which decays the scores and keeps ``max_per_img``), and
upsamples the kept masks to the network input, cropped to the image content, then resized to
``ori_shape``. Its boxes are zeros.

So a candidate is a (cell, class) pair and the target of an instance is its cell's class score
(``sigmoid`` of the cell's logit, before maskness and matrix NMS): what the detector scored
before it looked at the mask. The reported score is the detector's final one (maskness times
the matrix-NMS decay), as ``predict`` gives it. :meth:`SOLODetector.select` repeats
``_predict_by_feat_single`` step by step with mmdet's ``mask_matrix_nms`` (its indices tie
each instance to its cell); its mask is the head's own on the network input, its box is that
mask's bounding box. A candidate's box (for re-scoring by IoU) is the bounding box of its mask
decoded the same way, for the cells scoring above ``score_thr`` (the others are never kept;
their boxes are empty): one upsampled mask per such cell, the cost of a candidate's box.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, default_metas,
                   pad_masks)


def _solo_classes() -> Tuple[type, type]:
    from mmdet.models.dense_heads import SOLOHead, SOLOV2Head
    return SOLOHead, SOLOV2Head


def has_solo_decoding(model: nn.Module) -> bool:
    """Whether ``model`` has no box head and its ``mask_head`` is a ``SOLOHead`` or
    ``SOLOV2Head`` (or subclass) predicting with that class's own methods (not decoupled
    SOLO's x/y masks)."""
    solo, solo_v2 = _solo_classes()
    head = getattr(model, 'mask_head', None)
    if getattr(model, 'bbox_head', None) is not None or not isinstance(head, solo):
        return False
    base = solo_v2 if isinstance(head, solo_v2) else solo
    return all(getattr(type(head), name) is getattr(base, name)
               for name in ('forward', 'predict_by_feat', '_predict_by_feat_single'))


def upsampled_masks(probs: Tensor, size: Tuple[int, int], img_h: int, img_w: int,
                    thr: float) -> Tensor:
    """``_predict_by_feat_single``'s masks on the network input: ``(K, h, w)`` mask
    probabilities upsampled (bilinear) to ``size``, cropped to the image content
    ``(img_h, img_w)``, above ``thr`` (its resize to ``ori_shape`` follows)."""
    probs = F.interpolate(probs[None], size=size, mode='bilinear', align_corners=False)
    return probs[0, :, :img_h, :img_w] > thr


def mask_boxes(masks: Tensor, size: Tuple[int, int]) -> Tensor:
    """``(K, 4)`` xyxy bounding boxes (pixel edges) of ``(K, h, w)`` bool masks, clipped to
    ``size`` ``(H, W)``; all zero for an empty mask."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    height, width = masks.shape[1:]

    def extent(hit: Tensor, length: int) -> Tuple[Tensor, Tensor]:
        index = torch.arange(length, device=hit.device)
        first = torch.where(hit, index, length).min(dim=1)[0]
        last = torch.where(hit, index, -1).max(dim=1)[0] + 1
        return first, last
    y1, y2 = extent(rows, height)
    x1, x2 = extent(cols, width)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[0])
    return torch.where(rows.any(dim=1)[:, None], boxes, boxes.new_zeros(()))


class SOLODetector(ExplainableDetector):
    """MMDetection's SOLO and SOLOv2: grid cells as candidates, masks as the head's
    ``_predict_by_feat_single`` selects them."""

    kind = 'MMDetection SOLO'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.head = model.mask_head
        self.v2 = isinstance(self.head, _solo_classes()[1])

    @property
    def predicts_masks(self) -> bool:
        return True

    @property
    def selection_thr(self) -> float:
        """``test_cfg.score_thr``: ``_predict_by_feat_single`` keeps the cells above it."""
        return float(self.test_cfg.get('score_thr', 0) or 0)

    @property
    def mask_stride(self) -> int:
        """Input pixels per pixel of the masks the head decodes (SOLO: 4, as its
        ``_predict_by_feat_single`` upsamples them)."""
        return int(self.head.mask_stride) if self.v2 else 4

    def head_input_level(self, module: nn.Module, index: int, num_outputs: int
                         ) -> Optional[int]:
        """None: the head resizes the first and last levels from their neighbours' sizes, and
        SOLOv2's mask feature reads several levels."""
        return None

    # ------------------------------------------------------------ candidates
    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        if self.v2:  # its class output is the logits
            return self._output_candidates(self.head(tuple(feats)), None, classes, metas)
        captured = []  # SOLO's eval output is the scores: its logits are conv_cls's output
        handle = self.head.conv_cls.register_forward_hook(
            lambda _module, _args, output: captured.append(output))
        try:
            outputs = self.head(tuple(feats))
        finally:
            handle.remove()
        return self._output_candidates(outputs, captured, classes, metas)

    def _output_candidates(self, outputs, logits: Optional[List[Tensor]],
                           classes: Optional[Tensor], metas: Optional[Sequence[dict]]
                           ) -> List[FlatPredictions]:
        """Per level the cells' scores (points NMS as the head applies it), their boxes, and
        what the masks are decoded from: SOLO's per-level mask probabilities
        (``mask_source``), SOLOv2's kernels (``mask_coeffs``) and mask feature
        (``mask_source``). SOLO without ``logits`` (batched decoding): the head's scores, with
        their logarithms as logits. Without ``metas`` each image fills the whole input."""
        if len(outputs) != (3 if self.v2 else 2):
            raise ValueError(f'{type(self.head).__name__} returned {len(outputs)} outputs; '
                             f'expected its eval-mode outputs. Is the head in training mode?')
        mask_outputs, cls_outputs = outputs[0], outputs[1]
        channels = self.head.cls_out_channels
        thr = float(self.test_cfg.get('score_thr', 0) or 0)
        out = []
        for level, cls in enumerate(cls_outputs):
            batch = cls.shape[0]
            if self.v2 or logits is not None:
                logit = cls if self.v2 else logits[level]
                # predict_by_feat's (SOLOv2) and forward's (SOLO) points NMS, op for op
                scores = logit.sigmoid()
                local_max = F.max_pool2d(scores, 2, stride=1, padding=1)
                keep = local_max[:, :, :-1, :-1] == scores
                scores = scores * keep
                log_scores = F.logsigmoid(logit).masked_fill(~keep, float('-inf'))
            else:
                scores = logit = cls
                log_scores = cls.log()
            scores, log_scores, logit = (t.permute(0, 2, 3, 1).reshape(batch, -1, channels)
                                         for t in (scores, log_scores, logit))
            num = scores.shape[1]
            preds = FlatPredictions(
                scores=scores, log_scores=log_scores, logits=logit,
                boxes=scores.new_zeros((batch, num, 4)),
                levels=torch.full((num, ), level, dtype=torch.long, device=scores.device))
            if self.v2:
                kernels = mask_outputs[level]
                preds.mask_coeffs = kernels.permute(0, 2, 3, 1).reshape(
                    batch, num, self.head.kernel_out_channels)
            out.append(preds)
        out[0].mask_source = outputs[2] if self.v2 else tuple(mask_outputs)
        if classes is not None:
            for preds in out:
                preds.scores, preds.log_scores, preds.logits = (
                    t[..., classes] for t in (preds.scores, preds.log_scores, preds.logits))
        if metas is None:  # each image fills the whole input
            metas = default_metas(cls_outputs[0].shape[0], *self._upsampled_size(out[0]))
        self._candidate_boxes(out, metas, thr)
        return out

    def _upsampled_size(self, preds: FlatPredictions) -> Tuple[int, int]:
        """The size ``_predict_by_feat_single`` upsamples the masks to: the network input."""
        source = preds.mask_source if self.v2 else preds.mask_source[0]
        height, width = source.shape[-2:]
        return int(height * self.mask_stride), int(width * self.mask_stride)

    def _candidate_boxes(self, per_level: List[FlatPredictions], metas: Sequence[dict],
                         thr: float) -> None:
        """Fills in the boxes of the cells scoring above ``thr`` in any of their class
        columns (re-scoring asks for the explained instances' classes only): the bounding
        boxes of their masks as :meth:`select` decodes them (upsampled, cropped to
        ``img_shape``, ``> mask_thr``), so that a kept instance's box is its candidate's."""
        preds = FlatPredictions.cat(per_level)
        upsampled = self._upsampled_size(preds)
        offsets = [0]
        for level in per_level:
            offsets.append(offsets[-1] + level.scores.shape[1])
        with torch.no_grad():
            for b in range(preds.scores.shape[0]):
                cells = (preds.scores[b] > thr).any(dim=1).nonzero(as_tuple=True)[0]
                if len(cells) == 0:
                    continue
                img_h, img_w = metas[min(b, len(metas) - 1)]['img_shape'][:2]
                probs = self._mask_probs(preds, b, cells)
                boxes = torch.cat([  # in chunks: a mask of the input's size per cell
                    mask_boxes(upsampled_masks(chunk, upsampled, img_h, img_w,
                                               self.test_cfg['mask_thr']), (img_h, img_w))
                    for chunk in probs.split(64)])
                for level, preds_l in enumerate(per_level):
                    inside = (cells >= offsets[level]) & (cells < offsets[level + 1])
                    preds_l.boxes[b, cells[inside] - offsets[level]] = boxes[inside]

    def _mask_probs(self, preds: FlatPredictions, b: int, cells: Tensor) -> Tensor:
        """``(K, h, w)`` mask probabilities of the flat ``cells`` of image ``b`` on the mask
        grid, as ``_predict_by_feat_single`` has them."""
        if self.v2:  # the head's dynamic convolution, as _predict_by_feat_single runs it
            mask_feats = preds.mask_source
            mask_feats = mask_feats[min(b, mask_feats.shape[0] - 1)][None].detach()
            kernels = preds.mask_coeffs[min(b, preds.mask_coeffs.shape[0] - 1)].detach()
            size = self.head.dynamic_conv_size
            kernels = kernels[cells].view(len(cells), -1, size, size)
            return F.conv2d(mask_feats, kernels, stride=1).squeeze(0).sigmoid()
        levels = tuple(m[min(b, m.shape[0] - 1)].detach() for m in preds.mask_source)
        out = levels[0].new_empty((len(cells), *levels[0].shape[-2:]))
        start = 0
        for level, masks in enumerate(levels):
            inside = (cells >= start) & (cells < start + masks.shape[0])
            out[inside] = masks[cells[inside] - start]
            start += masks.shape[0]
        return out

    # ------------------------------------------------------------ selection
    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        """``_predict_by_feat_single`` with the head's test config (or ``cfg``), keeping each
        instance's cell and class: its final score, its mask on the network input and that
        mask's bounding box; then the instances above ``score_thr``, the ``topk`` best
        (``<= 0``: all)."""
        cfg = self.test_cfg if cfg is None else cfg
        batch = preds.scores.shape[0]
        out = []
        for b in range(batch):
            meta = None if metas is None else metas[min(b, len(metas) - 1)]
            scores, labels, cells, masks = self._select_single(preds, b, meta, cfg)
            above = scores > score_thr
            scores, labels, cells, masks = (t[above] for t in (scores, labels, cells, masks))
            if topk > 0:
                scores, labels, cells, masks = (t[:topk] for t in
                                                (scores, labels, cells, masks))
            out.append(ExplainedBoxes(boxes=mask_boxes(masks, masks.shape[-2:]),
                                      scores=scores, labels=labels, priors=cells,
                                      levels=preds.levels[cells], masks=masks))
        return out

    def _select_single(self, preds: FlatPredictions, b: int, meta: Optional[dict], cfg: dict
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``_predict_by_feat_single`` of image ``b``, step by step: the kept ``(scores,
        labels, cells, masks)``, masks on the network input."""
        from mmdet.models.layers import mask_matrix_nms
        cls_scores = preds.scores[min(b, preds.scores.shape[0] - 1)].detach()
        upsampled = self._upsampled_size(preds)
        if meta is None:
            meta = default_metas(1, *upsampled)[0]
        size = upsampled
        if meta.get('batch_input_shape') is not None:
            size = tuple(int(v) for v in meta['batch_input_shape'][:2])
        img_h, img_w = meta['img_shape'][:2]
        empty = (cls_scores.new_zeros(0), cls_scores.new_zeros(0, dtype=torch.long),
                 cls_scores.new_zeros(0, dtype=torch.long),
                 torch.zeros((0, *size), dtype=torch.bool, device=cls_scores.device))

        score_mask = cls_scores > cfg['score_thr']
        scores = cls_scores[score_mask]
        if len(scores) == 0:
            return empty
        inds = score_mask.nonzero()
        labels, cells = inds[:, 1], inds[:, 0]
        # a mask must be larger than its level's stride
        strides = scores.new_tensor(self.head.strides)[preds.levels[cells]]
        mask_probs = self._mask_probs(preds, b, cells)
        masks = mask_probs > cfg['mask_thr']
        sum_masks = masks.sum((1, 2)).float()
        keep = sum_masks > strides
        if keep.sum() == 0:
            return empty
        masks, mask_probs, sum_masks = masks[keep], mask_probs[keep], sum_masks[keep]
        scores, labels, cells = scores[keep], labels[keep], cells[keep]
        scores = scores * ((mask_probs * masks).sum((1, 2)) / sum_masks)  # maskness
        scores, labels, _, kept = mask_matrix_nms(
            masks, labels, scores, mask_area=sum_masks, nms_pre=cfg['nms_pre'],
            max_num=cfg['max_per_img'], kernel=cfg['kernel'], sigma=cfg['sigma'],
            filter_thr=cfg['filter_thr'])
        if len(kept) == 0:
            return empty
        masks = upsampled_masks(mask_probs[kept], upsampled, img_h, img_w, cfg['mask_thr'])
        return scores, labels, cells[kept], pad_masks(masks, size)

    # ------------------------------------------------------------ batched inference
    def forward(self, inputs: Tensor):
        """The backbone, neck and mask head."""
        return self.head(self.model.extract_feat(inputs))

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The instances of ``predict`` with their masks' bounding boxes (its own boxes are
        zeros) rescaled to each original image."""
        preds = FlatPredictions.cat(self._output_candidates(outs, None, None, metas))
        dets = self.select(preds, float('-inf'), 0, metas, cfg)
        boxes = [det.boxes / det.boxes.new_tensor(meta['scale_factor']).repeat((1, 2))
                 for det, meta in zip(dets, metas)]
        return (torch.cat(boxes), torch.cat([d.scores for d in dets]),
                torch.cat([d.labels for d in dets]), [len(d) for d in dets])

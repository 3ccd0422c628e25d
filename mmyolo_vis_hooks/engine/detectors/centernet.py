"""MMDetection's CenterNet (``CenterNetHead``: objects as points on a class heatmap).

How MMDetection predicts: ``forward_single`` gives one level of a class heatmap
(``heatmap_head(x).sigmoid()``), a box size (``wh_head``) and a sub-pixel centre offset
(``offset_head``) per location. ``_decode_heatmap`` keeps the heatmap's local maxima
(``get_local_maximum``, a max-pool of ``local_maximum_kernel``), takes the ``topk`` best
(location, class) pairs over the whole heatmap (``get_topk_from_heatmap``) and builds each box
around its location plus offset, scaled from heatmap to network-input pixels
(``batch_input_shape``); ``_predict_by_feat_single`` subtracts the test pipeline's ``border``
(``RandomCenterCropPad`` pastes the image into a larger canvas), rescales, and keeps every
pair: no score threshold, no NMS (``with_nms`` is off in ``predict``).

Here the candidates are the heatmap locations: ``logits`` the heatmap head's output before its
sigmoid, ``scores`` the sigmoid (the same operation as ``forward_single``), ``boxes`` the box
of every location in network-input pixels (canvas, border included). A box's target is its
location's class logit. The selection runs MMDetection's own ``get_local_maximum`` and
``get_topk_from_heatmap`` on the scores.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   above_score_thr, default_metas, explained_boxes, flat_results)

_OWN_DECODING = ('forward_single', 'predict_by_feat', '_predict_by_feat_single',
                 '_decode_heatmap')


class CenterNetDetector(ExplainableDetector):
    """MMDetection's CenterNet, decoded with ``CenterNetHead``'s own heatmap utilities.

    Args:
        model (nn.Module): The unwrapped detector.
    """

    kind = 'MMDetection CenterNet head'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        from mmdet.models.dense_heads import CenterNetHead
        own = [name for name in _OWN_DECODING
               if getattr(type(self.head), name) is not getattr(CenterNetHead, name)]
        if own:
            raise UnsupportedDetectorError(
                f'{type(self.head).__name__} replaces CenterNetHead\'s {", ".join(own)}; '
                f'CenterNet box CAMs support CenterNetHead\'s own heatmap decoding')
        self._heatmap_shapes = {}

    @property
    def candidate_thr(self) -> float:
        """``_decode_heatmap`` has no score threshold: every top-k pair is a detection."""
        return 0.0

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        (feat, ) = feats
        head = self.head
        logits = head.heatmap_head(feat)  # (B, C, H, W); forward_single's sigmoid follows
        wh, offset = head.wh_head(feat), head.offset_head(feat)
        batch, _, height, width = logits.shape
        self._heatmap_shapes[height * width] = (height, width)
        if metas is None:
            metas = default_metas(batch, height * 4, width * 4)  # CenterNet's stride
        metas = list(metas)
        if len(metas) != batch:  # n perturbed copies of one image
            metas = metas[:1] * batch
        # _decode_heatmap's box at every location, element for element the same operations
        xs = torch.arange(width, device=feat.device).float()[None, None, :] + offset[:, 0]
        ys = torch.arange(height, device=feat.device).float()[None, :, None] + offset[:, 1]
        boxes = []
        for b, meta in enumerate(metas):
            inp_h, inp_w = meta['batch_input_shape'][:2]
            sx, sy = inp_w / width, inp_h / height
            boxes.append(torch.stack([(xs[b] - wh[b, 0] / 2) * sx, (ys[b] - wh[b, 1] / 2) * sy,
                                      (xs[b] + wh[b, 0] / 2) * sx, (ys[b] + wh[b, 1] / 2) * sy],
                                     dim=-1).reshape(-1, 4))
        flat = logits.permute(0, 2, 3, 1).reshape(batch, height * width, -1)
        if classes is not None:
            flat = flat[..., classes]
        return [FlatPredictions(
            scores=flat.sigmoid(), log_scores=F.logsigmoid(flat), logits=flat,
            boxes=torch.stack(boxes),
            levels=torch.zeros(height * width, dtype=torch.long, device=feat.device))]

    def head_input_level(self, module: nn.Module, index: int, num_outputs: int
                         ) -> Optional[int]:
        return super().head_input_level(module, index, num_outputs) if num_outputs == 1 \
            else None

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """``_decode_heatmap``'s choice: the local maxima of the heatmap, the ``topk`` best
        (location, class) pairs (MMDetection's own functions); then those above
        ``score_thr``, the ``topk`` best of them (``<= 0``: all)."""
        from mmdet.models.utils import get_local_maximum, get_topk_from_heatmap
        batch, num, classes = preds.scores.shape
        height, width = self._heatmap_size(preds, metas)
        cfg = self.test_cfg
        out = []
        for b in range(batch):
            heat = preds.scores[b].detach().t().reshape(1, classes, height, width).contiguous()
            heat = get_local_maximum(heat, kernel=cfg.get('local_maximum_kernel', 3))
            scores, index, labels, _, _ = get_topk_from_heatmap(heat, k=cfg.get('topk', 100))
            scores, index, labels = scores[0], index[0], labels[0]
            out.append(explained_boxes(preds, b, scores, labels, index, score_thr, topk))
        return out

    def _heatmap_size(self, preds: FlatPredictions, metas: Optional[Sequence[dict]]
                      ) -> Tuple[int, int]:
        """The heatmap's ``(H, W)``: the network input over the head's stride (4), else the
        shape :meth:`level_candidates` last gave that many locations."""
        num = preds.scores.shape[1]
        if metas and metas[0].get('batch_input_shape') is not None:
            inp_h, inp_w = metas[0]['batch_input_shape'][:2]
            height, width = -(-int(inp_h) // 4), -(-int(inp_w) // 4)
            if height * width == num:
                return height, width
        if num not in self._heatmap_shapes:
            raise ValueError(f'cannot tell the shape of a heatmap of {num} locations without '
                             f'the batch\'s metainfo')
        return self._heatmap_shapes[num]

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """``CenterNetHead.predict_by_feat`` (rescaled, border subtracted), with the pairs at
        or below ``cfg['score_thr']`` dropped (the head keeps all of its top k)."""
        from mmengine.config import ConfigDict
        # the heatmap utilities view() their inputs: no channels-last outputs
        outs = tuple([t.contiguous() for t in level] for level in outs)
        metas = [dict(meta, border=meta.get('border', (0, 0, 0, 0))) for meta in metas]
        saved = self.head.test_cfg  # predict_by_feat reads topk from the head's test config
        self.head.test_cfg = ConfigDict(cfg)
        try:
            results = self.head.predict_by_feat(*outs, batch_img_metas=metas, rescale=True)
        finally:
            self.head.test_cfg = saved
        return above_score_thr(*flat_results(results), cfg)


def adapter_classes() -> dict:
    from mmdet.models.dense_heads import CenterNetHead
    return {CenterNetHead: CenterNetDetector}

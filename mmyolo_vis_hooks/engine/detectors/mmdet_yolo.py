"""MMDetection's own YOLO heads: ``YOLOV3Head`` (YOLOv3) and ``YOLOXHead`` (MMDetection's
YOLOX, a namesake of MMYOLO's head).

Both score a prior as ``sigmoid(cls) * sigmoid(objectness)`` and select over all levels at
once (not level by level as ``BaseDenseHead``):

- ``YOLOV3Head.predict_by_feat``: one output per level, ``(B, A * (5 + C), H, W)`` per anchor
  ``(x, y, w, h, objectness, classes)``; boxes from the head's ``bbox_coder`` (sigmoid of the
  center offsets, anchors, the level's stride); the priors with objectness at or above
  ``conf_thr``, then the (prior, class) pairs whose class score is above ``score_thr``, the
  ``nms_pre`` best over all levels (``filter_scores_and_topk``), then ``BaseDenseHead.
  _bbox_post_process`` (rescale, times the objectness, ``min_bbox_size``, NMS, ``max_per_img``).
- ``YOLOXHead.predict_by_feat``: ``(cls, bbox, objectness)`` per level; boxes from the head's
  ``_bbox_decode`` of the priors with their strides; each prior's best class, kept when
  ``objectness * class score >= score_thr``; its own ``_bbox_post_process``: rescale and NMS
  (no ``max_per_img``).

Here the candidates are every (prior, class) with the graph kept; a box's target is its class
logit plus its prior's objectness logit (``'logit'``), or the log of their sigmoids' product.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ExplainedBoxes, FlatPredictions, split_dense_outputs
from .base import explained_boxes
from .mmdet_dense import MMDetDenseDetector, _flat


def _objectness_candidates(cls_logits: Tensor, obj_logits: Tensor, boxes: Tensor, level: int,
                           classes: Optional[Tensor]) -> FlatPredictions:
    """One level's candidates from ``(B, N, C)`` class and ``(B, N)`` objectness logits."""
    if classes is not None:
        cls_logits = cls_logits[..., classes]
    class_scores, objectness = cls_logits.sigmoid(), obj_logits.sigmoid()
    return FlatPredictions(
        scores=class_scores * objectness[..., None],
        log_scores=F.logsigmoid(cls_logits) + F.logsigmoid(obj_logits)[..., None],
        logits=cls_logits + obj_logits[..., None], boxes=boxes,
        levels=torch.full((boxes.shape[1], ), level, dtype=torch.long, device=boxes.device),
        objectness=objectness, class_scores=class_scores)


class YOLOV3Detector(MMDetDenseDetector):
    """MMDetection's YOLOv3 (``YOLOV3Head``)."""

    kind = 'MMDetection YOLOv3 head'

    def _output_candidates(self, outputs, classes: Optional[Tensor],
                           metas: Sequence[dict], level_logits=None) -> List[FlatPredictions]:
        head = self.head
        pred_maps = outputs[0]
        mlvl_anchors = head.prior_generator.grid_priors([p.shape[-2:] for p in pred_maps],
                                                        device=pred_maps[0].device)
        out = []
        for level, (pred, anchors, stride) in enumerate(
                zip(pred_maps, mlvl_anchors, head.featmap_strides)):
            pred = _flat(pred, head.num_attrib)
            deltas = torch.cat([pred[..., :2].sigmoid(), pred[..., 2:4]], dim=-1)
            boxes = head.bbox_coder.decode(anchors, deltas,
                                           pred.new_tensor(stride).expand(pred.shape[1], 1))
            out.append(_objectness_candidates(pred[..., 5:], pred[..., 4], boxes, level,
                                              classes))
        return out

    def _filter(self, preds: FlatPredictions, b: int, cfg: dict
                ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """``predict_by_feat``'s candidates of image ``b``: objectness ``>= conf_thr``, then
        class scores above ``score_thr``, the ``nms_pre`` best of all levels."""
        from mmdet.models.utils import filter_scores_and_topk
        objectness = preds.objectness[b].detach()
        index = torch.arange(objectness.shape[0], device=objectness.device)
        conf_thr = cfg.get('conf_thr', -1)
        if conf_thr > 0:
            index = index[objectness >= conf_thr]
        scores, labels, keep, _ = filter_scores_and_topk(
            preds.class_scores[b].detach()[index], cfg.get('score_thr', 0),
            cfg.get('nms_pre', -1))
        return scores, labels, index[keep], objectness


class YOLOXDetector(MMDetDenseDetector):
    """MMDetection's YOLOX (``mmdet.models.dense_heads.YOLOXHead``)."""

    kind = 'MMDetection YOLOX head'

    def _output_candidates(self, outputs, classes: Optional[Tensor],
                           metas: Sequence[dict], level_logits=None) -> List[FlatPredictions]:
        head = self.head
        cls_scores, bbox_preds, objectnesses = split_dense_outputs(head, outputs, 'objectness')
        mlvl_priors = head.prior_generator.grid_priors(
            [c.shape[2:] for c in cls_scores], dtype=cls_scores[0].dtype,
            device=cls_scores[0].device, with_stride=True)
        return [_objectness_candidates(_flat(cls, head.cls_out_channels), _flat(obj, 1)[..., 0],
                                       head._bbox_decode(priors, _flat(bbox, 4)), level,
                                       classes)
                for level, (cls, bbox, obj, priors) in enumerate(
                    zip(cls_scores, bbox_preds, objectnesses, mlvl_priors))]

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None,
               cfg: Optional[dict] = None) -> List[ExplainedBoxes]:
        """``YOLOXHead.predict_by_feat`` (``rescale=True``) keeping each detection's prior;
        then the detections above ``score_thr``, the ``topk`` best (``<= 0``: all)."""
        from mmcv.ops import batched_nms
        cfg = self.test_cfg if cfg is None else cfg
        batch = preds.scores.shape[0]
        metas = list(metas) if metas is not None else [None] * batch
        out = []
        for b in range(batch):
            best, labels = preds.class_scores[b].detach().max(dim=1)
            objectness = preds.objectness[b].detach()
            priors = (objectness * best >= cfg['score_thr']).nonzero(as_tuple=True)[0]
            scores, labels = best[priors] * objectness[priors], labels[priors]
            boxes = preds.boxes[b].detach()[priors]
            if metas[b] is not None and metas[b].get('scale_factor') is not None:
                boxes = boxes / boxes.new_tensor(metas[b]['scale_factor']).repeat((1, 2))
            if boxes.numel() > 0:
                det, keep = batched_nms(boxes, scores, labels, cfg['nms'])
                scores, labels, priors = det[:, -1], labels[keep], priors[keep]
            out.append(explained_boxes(preds, b, scores, labels, priors, score_thr, topk))
        return out


def adapter_classes() -> dict:
    """MMDetection's YOLO head classes -> their adapters."""
    from mmdet.models.dense_heads import YOLOV3Head, YOLOXHead
    return {YOLOV3Head: YOLOV3Detector, YOLOXHead: YOLOXDetector}

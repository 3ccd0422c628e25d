"""MMYOLO's YOLOX-pose (``YOLOXPoseHead``): YOLOX's boxes, plus per candidate the keypoints of
its person and their visibilities.

``YOLOXPoseHead`` returns, in eval mode, YOLOX's ``(cls, bbox, objectness)`` per level and two
more: ``kpt_preds`` (``2 * num_keypoints`` offsets per prior) and ``vis_preds``
(``num_keypoints`` visibility logits per prior). Its ``predict_by_feat`` runs YOLOX's own
decoding and NMS (``YOLOv5Head.predict_by_feat`` with ``yolox_style``: class score x
objectness, no objectness pre-filter, no ``max_per_img``), records which candidates that kept,
and gives each kept person the keypoints ``decode_pose(priors, offsets, strides)`` (offset x
stride + prior, in network-input pixels) and the scores ``sigmoid(vis)`` of its candidate.

So the candidates here are the YOLOX dense kind's (the same class scores, objectness and
boxes; a person's target is its candidate's class score), each with its keypoints decoded by
the head's own ``decode_pose`` and its visibility logits. :meth:`PoseDetector.select` is the
dense kind's selection, and each person keeps its candidate's keypoints. A keypoint CAM
(``BoxCAM(keypoint=j)``) differentiates keypoint ``j``'s visibility of the person's candidate.

Two things of the head's ``predict_by_feat`` (MMYOLO 0.6) are not mirrored, as they are bugs:
it reads the letterbox padding from ``img_meta['img_meta']`` (a key that never exists), so
with ``rescale=True`` its keypoints are not shifted by the padding its boxes are shifted by
(here both are mapped to the original image the same way:
``core.geometry.points_to_original``); and it needs an explicit ``cfg`` (``cfg=None``, what
``model.predict`` passes, fails on ``cfg.max_per_img``).
"""
from typing import List, Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .base import (ExplainedBoxes, FlatPredictions, UnsupportedDetectorError,
                   decode_with_predict_by_feat)
from .mmyolo_dense import MMYOLODenseDetector, level_predictions, select_boxes

# The pose heads this kind explains (mmyolo.models.dense_heads), by class name.
HEAD_NAMES = ('YOLOXPoseHead', )


def head_classes() -> Tuple[type, ...]:
    """MMYOLO's supported pose head classes (importable without mmpose; building a YOLOX-pose
    model needs it, for its OKS loss)."""
    from mmyolo.models import dense_heads
    return tuple(getattr(dense_heads, name) for name in HEAD_NAMES)


def has_pose_decoding(head: nn.Module) -> bool:
    """Whether ``head`` decodes its keypoints like ``YOLOXPoseHead`` (its own
    ``predict_by_feat`` and ``decode_pose``)."""
    from mmyolo.models.dense_heads import YOLOXPoseHead
    cls = type(head)
    return isinstance(head, YOLOXPoseHead) and \
        cls.predict_by_feat is YOLOXPoseHead.predict_by_feat and \
        cls.decode_pose is YOLOXPoseHead.decode_pose


class PoseDetector(MMYOLODenseDetector):
    """MMYOLO's YOLOX-pose: persons as YOLOX boxes, plus each person's keypoints."""

    kind = 'MMYOLO pose head'

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if not has_pose_decoding(self.head):
            raise UnsupportedDetectorError(
                f'{type(self.head).__name__} decodes its keypoints its own way; MMYOLO pose '
                f'supports {", ".join(HEAD_NAMES)}')

    @property
    def predicts_keypoints(self) -> bool:
        return True

    @property
    def num_keypoints(self) -> int:
        return int(self.head.num_keypoints)

    @property
    def class_names(self) -> List[str]:
        """The dataset's class names; MMPose's dataset metainfo names keypoints, not classes:
        its one class is a person (COCO's category of every keypoint annotation)."""
        meta = getattr(self.model, 'dataset_meta', None) or {}
        if not meta.get('classes') and self.num_classes == 1:
            return ['person']
        return super().class_names

    @property
    def keypoint_names(self) -> List[str]:
        """The dataset's keypoint names (mmpose metainfo ``keypoint_id2name``), or the
        keypoint indices as strings."""
        meta = getattr(self.model, 'dataset_meta', None) or {}
        names = meta.get('keypoint_id2name') or {}
        return [str(names.get(j, j)) for j in range(self.num_keypoints)]

    @property
    def skeleton(self) -> Optional[List[Tuple[int, int]]]:
        """The keypoint pairs to join (mmpose metainfo ``skeleton_links``), or None when the
        dataset metainfo has none (drawing then uses COCO's for 17 keypoints)."""
        meta = getattr(self.model, 'dataset_meta', None) or {}
        links = meta.get('skeleton_links')
        return None if not links else [(int(a), int(b)) for a, b in links]

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        head = self.head
        outputs = self.head(tuple(feats))
        if len(outputs) != 5:
            raise ValueError(f'{type(head).__name__} returned {len(outputs)} outputs; in eval '
                             f'mode it returns (cls, bbox, objectness, kpt, vis)')
        kpt_preds, vis_preds = outputs[3], outputs[4]
        per_level = level_predictions(head, outputs[:3], classes=classes)
        num = self.num_keypoints
        # grid_priors is pure (predict_by_feat's cached mlvl_priors are left alone)
        mlvl_priors = head.prior_generator.grid_priors(
            [k.shape[2:] for k in kpt_preds], dtype=kpt_preds[0].dtype,
            device=kpt_preds[0].device)
        for preds, kpt, vis, priors, stride in zip(per_level, kpt_preds, vis_preds,
                                                   mlvl_priors, head.featmap_strides):
            batch = kpt.shape[0]
            # flattened as predict_by_feat does: (h, w) order, one row per candidate
            offsets = kpt.permute(0, 2, 3, 1).reshape(batch, -1, num * 2)
            strides = priors.new_full((priors.shape[0], ), stride)
            preds.keypoints = head.decode_pose(priors, offsets, strides)
            logits = vis.permute(0, 2, 3, 1).reshape(batch, -1, num)
            preds.keypoint_logits = logits
            preds.keypoint_scores = logits.sigmoid()
            preds.keypoint_log_scores = F.logsigmoid(logits)
        return per_level

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        """The dense kind's selection; each person keeps its candidate's keypoints
        (network-input pixels) and visibility scores, as ``predict_by_feat`` does."""
        out = select_boxes(preds, self.test_cfg, score_thr, topk, metas)
        if preds.keypoints is None:
            return out
        for b, det in enumerate(out):
            image = min(b, preds.keypoints.shape[0] - 1)
            det.keypoints = preds.keypoints[image][det.priors].detach()
            det.keypoint_scores = preds.keypoint_scores[image][det.priors].detach()
        return out

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The persons' boxes (no keypoints) as the head's ``predict_by_feat`` gives them:
        its boxes are ``YOLOv5Head.predict_by_feat``'s of YOLOX's three outputs, which
        :func:`~.mmyolo_dense.batched_predict_by_feat` reproduces bit for bit."""
        from .mmyolo_dense import batched_predict_by_feat
        return batched_predict_by_feat(self.head, *outs[:3], batch_img_metas=metas,
                                       cfg=self.test_cfg if cfg is None else cfg)

    def decode_unbatched(self, outs, metas: List[dict], cfg: dict
                         ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """``YOLOv5Head.predict_by_feat`` of YOLOX's outputs, the boxes part of the head's own
        (which, with more than ``max_per_img`` candidates above the threshold, indexes its
        keypoints out of range: MMYOLO 0.6)."""
        from mmyolo.models.dense_heads import YOLOv5Head
        return decode_with_predict_by_feat(self.head, outs[:3], metas,
                                           self.test_cfg if cfg is None else cfg, YOLOv5Head)

"""The detector contract: what every consumer (the CAM methods, D-RISE, faithfulness, both
hooks, the sliced predictor, the sahi adapter, the tools) may ask of a detector.

A detector we can explain is an MMEngine detector wrapped in an :class:`ExplainableDetector`,
found by :func:`~mmyolo_vis_hooks.engine.detectors.explainable_detector` from the class
hierarchy of its head. One subclass per detector kind, one file each in this folder; nothing
outside this folder reads ``bbox_head`` or tests a head's class.

The contract, for a preprocessed batch ``inputs`` ``(B, 3, H, W)`` (the data preprocessor's
output) and optionally its metainfo ``metas`` (one dict per image: ``img_shape``,
``scale_factor``, ``pad_param`` ...; built from the input size when absent):

- :meth:`~ExplainableDetector.extract_feat` ``(inputs) -> feats``: what the prediction part
  reads (the neck's levels for dense heads); opaque to consumers.
- :meth:`~ExplainableDetector.level_candidates` ``(feats, classes=None) -> [FlatPredictions]``:
  EVERY candidate (prior, RoI or query) of the batch, before any threshold or NMS, with its
  differentiable class logits, scores and log scores and its decoded box in network-input
  pixels, one entry per feature level (a kind without levels returns one). The kind's own
  decoding is reused (priors, box coder), never re-derived. Levels may have different batch
  sizes (a perturbed level for ``n`` copies beside unchanged ones at 1).
- :meth:`~ExplainableDetector.select` ``(preds, score_thr, topk, metas) -> [ExplainedBoxes]``:
  the detector's own post-processing (thresholds, pre-NMS top-k, NMS, max per image) on those
  candidates; each final detection keeps the candidate index and label behind it, so its
  target is ``preds.<scores|logits|log_scores>[image, candidate, label]``. Instance
  segmentation kinds also give each detection its predicted mask
  (:attr:`ExplainedBoxes.masks`, on the network input), from the head's own mask decoding of
  exactly those detections; the target of an instance stays its candidate's class score.
  Pose kinds also give each detection its candidate's keypoints
  (:attr:`ExplainedBoxes.keypoints`); the target of a person is its candidate's class score,
  that of its keypoint ``j`` the candidate's visibility
  ``preds.keypoint_<scores|logits|log_scores>[image, candidate, j]``.
- Re-scoring the same candidate after the input or a layer changed: run
  :meth:`level_candidates` again on the changed features, restricted to the boxes' classes,
  and :func:`matched_log_scores` finds, per box, the best IoU-matched candidate above
  :attr:`candidate_thr` (the IoU match keeps working where a perturbation moves the box to
  a neighbouring prior). :meth:`head_input_level` says when a layer output is exactly one
  level's head input, so only that level needs to run again.
- :attr:`num_classes`, :attr:`class_names`, :meth:`default_target_layers` (the layers whose
  outputs feed the scores, one per level) and :attr:`kind` (a short name for messages).
- :meth:`token_grids` ``(feats) -> ((h, w), ...)``: for kinds with a transformer, the grid of
  each feature level in its token sequences, so that a layer returning tokens (a DETR's
  encoder) is explained as one map per level; empty for the others.
- Batched inference for slicing: :meth:`forward` ``(inputs) -> outs`` (what needs no
  metainfo: the whole network for dense heads) and
  :meth:`decode` ``(outs, metas, cfg) -> (bboxes, scores, labels, counts)`` with the boxes in
  each image's original pixels, as the detector's ``predict`` would give them.

Adapters never change the model: they run it in whatever mode the caller set (consumers use
``core.model_state.preserved_model_state`` and eval mode).
"""
import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.geometry import box_iou


class UnsupportedDetectorError(ValueError):
    """A detector whose kind has no adapter (yet): the message names the kind and what is
    supported. A ValueError, so the tools print it in one line and the hooks raise it early."""


@dataclass
class FlatPredictions:
    """All candidate predictions of a batch, before any threshold or NMS.

    Attributes:
        scores (Tensor): ``(B, N, num_classes)`` confidences in [0, 1] (the values the head's
            own post-processing thresholds and sorts), differentiable.
        log_scores (Tensor): ``(B, N, num_classes)`` their logarithms computed stably from the
            logits (``logsigmoid``/``log_softmax``). In float32 ``sigmoid`` rounds to 1 for
            logits above ~17 and its gradient to 0; ``score * grad(log_score)`` is the same
            gradient without that underflow up to logits of ~87.
        logits (Tensor): ``(B, N, num_classes)`` the sum of the logits behind each score: the
            class logit, plus the candidate's objectness (or centerness) logit where the score
            is a product with one. Its gradient has no saturating function at the end.
        boxes (Tensor): ``(B, N, 4)`` xyxy boxes in network-input pixels (``(B, N, 5)``
            rotated boxes for kinds with :attr:`ExplainableDetector.box_dim` 5).
        levels (Tensor): ``(N,)`` feature level of each candidate.
        objectness (Tensor, optional): ``(B, N)`` objectness probability of each candidate for
            heads with an objectness branch, else None. ``scores`` already include it (D-RISE
            weighs it separately).
        score_factors (Tensor, optional): ``(B, N)`` a factor the head multiplies into the
            class scores AFTER its candidate threshold (FCOS/ATSS centerness); ``scores``
            already include it. None when there is none.
        class_scores (Tensor, optional): ``(B, N, num_classes)`` the scores before
            ``score_factors`` (what such a head thresholds); None without score factors.
        class_boxes (Tensor, optional): ``(B, N, num_classes, 4)`` a box per class where the
            box depends on the class (RoI heads regress one per class); ``boxes`` is then the
            box of each candidate's best class. None where a candidate has one box.
        proposals (Tensor, optional): ``(B, N, 4)`` the region each candidate was pooled from
            (two-stage detectors): handing them back to ``level_candidates`` re-scores the
            same candidates on changed features.
        valid (Tensor, optional): ``(B, N)`` bool, False for padding where images have
            different candidate counts, or for candidates the detector's own decoding leaves
            out (DDQ-DETR's non-distinct queries); those score 0. None when all are real.
        mask_coeffs (Tensor, optional): ``(B, N, M)`` each candidate's own mask parameters
            (instance-segmentation heads with per-candidate mask coefficients or kernels);
            None otherwise.
        mask_source (optional): What the kind's mask decoding reads beside them (mask
            prototypes, mask features, or the feature levels a mask head pools from; Grid
            R-CNN: the levels its grid head pools from), batch first; opaque to consumers.
            None for other box-only kinds.
        keypoints (Tensor, optional): ``(B, N, J, 2)`` xy of each candidate's ``J`` keypoints
            in network-input pixels (pose heads), decoded by the head; None otherwise.
        keypoint_scores (Tensor, optional): ``(B, N, J)`` their visibility scores in [0, 1]
            (what the head reports as ``keypoint_scores``), differentiable; None otherwise.
        keypoint_logits (Tensor, optional): ``(B, N, J)`` the visibility logits behind them.
        keypoint_log_scores (Tensor, optional): ``(B, N, J)`` their logarithms, computed
            stably from the logits.
    """
    scores: Tensor
    log_scores: Tensor
    logits: Tensor
    boxes: Tensor
    levels: Tensor
    objectness: Optional[Tensor] = None
    score_factors: Optional[Tensor] = None
    class_scores: Optional[Tensor] = None
    class_boxes: Optional[Tensor] = None
    proposals: Optional[Tensor] = None
    valid: Optional[Tensor] = None
    mask_coeffs: Optional[Tensor] = None
    mask_source: Optional[Any] = None
    keypoints: Optional[Tensor] = None
    keypoint_scores: Optional[Tensor] = None
    keypoint_logits: Optional[Tensor] = None
    keypoint_log_scores: Optional[Tensor] = None

    def image(self, b: int) -> 'FlatPredictions':
        """The predictions of image ``b`` as a batch of one."""
        def pick(t: Optional[Tensor]) -> Optional[Tensor]:
            return None if t is None else t[b:b + 1]
        return FlatPredictions(pick(self.scores), pick(self.log_scores), pick(self.logits),
                               pick(self.boxes), self.levels, pick(self.objectness),
                               pick(self.score_factors), pick(self.class_scores),
                               pick(self.class_boxes), pick(self.proposals), pick(self.valid),
                               pick(self.mask_coeffs), batch_item(self.mask_source, b),
                               keypoints=pick(self.keypoints),
                               keypoint_scores=pick(self.keypoint_scores),
                               keypoint_logits=pick(self.keypoint_logits),
                               keypoint_log_scores=pick(self.keypoint_log_scores))

    @staticmethod
    def cat(per_level: Sequence['FlatPredictions']) -> 'FlatPredictions':
        """The levels of :meth:`ExplainableDetector.level_candidates` as one candidate list
        (level order: a candidate index addresses the same prediction in the head's own
        flattened decoding)."""
        if len(per_level) == 1:
            return per_level[0]

        def cat_optional(name: str) -> Optional[Tensor]:
            values = [getattr(p, name) for p in per_level]
            return None if values[0] is None else torch.cat(values, dim=1)
        return FlatPredictions(
            scores=torch.cat([p.scores for p in per_level], dim=1),
            log_scores=torch.cat([p.log_scores for p in per_level], dim=1),
            logits=torch.cat([p.logits for p in per_level], dim=1),
            boxes=torch.cat([p.boxes for p in per_level], dim=1),
            levels=torch.cat([p.levels for p in per_level]),
            objectness=cat_optional('objectness'),
            score_factors=cat_optional('score_factors'),
            class_scores=cat_optional('class_scores'),
            mask_coeffs=cat_optional('mask_coeffs'),
            mask_source=per_level[0].mask_source,  # image-level: the same for every level
            keypoints=cat_optional('keypoints'),
            keypoint_scores=cat_optional('keypoint_scores'),
            keypoint_logits=cat_optional('keypoint_logits'),
            keypoint_log_scores=cat_optional('keypoint_log_scores'))


@dataclass
class ExplainedBoxes:
    """The boxes chosen in one image, each tied to the candidate that produced it.

    Attributes:
        boxes (Tensor): ``(K, 4)`` xyxy in network-input pixels (``(K, 5)`` rotated).
        scores (Tensor): ``(K, )`` confidences.
        labels (Tensor): ``(K, )`` class indices.
        priors (Tensor): ``(K, )`` candidate index into :class:`FlatPredictions` (the target
            of a box is ``scores[image, prior, label]``).
        levels (Tensor): ``(K, )`` feature level of each box's candidate.
        masks (Tensor, optional): ``(K, H, W)`` bool: each detection's predicted instance
            mask on the network input (its ``(H, W)``, the boxes' pixels), as the
            detector's own mask decoding gives it for that detection (before rescaling to
            the original image). None for detectors without masks.
        keypoints (Tensor, optional): ``(K, J, 2)`` xy of each detection's keypoints in
            network-input pixels (its candidate's, as the pose head decodes them). None for
            detectors without keypoints.
        keypoint_scores (Tensor, optional): ``(K, J)`` their visibility scores.
    """
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    priors: Tensor
    levels: Tensor
    masks: Optional[Tensor] = None
    keypoints: Optional[Tensor] = None
    keypoint_scores: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.scores.numel())


def explained_boxes(preds: FlatPredictions, b: int, scores: Tensor, labels: Tensor,
                    priors: Tensor, score_thr: float, topk: int) -> ExplainedBoxes:
    """Image ``b``'s detections (best first) scoring above ``score_thr``, the ``topk`` best
    (``<= 0``: all), each with its candidate's box."""
    above = scores > score_thr
    scores, labels, priors = scores[above], labels[above], priors[above]
    if topk > 0:
        scores, labels, priors = scores[:topk], labels[:topk], priors[:topk]
    return ExplainedBoxes(boxes=preds.boxes[b].detach()[priors], scores=scores, labels=labels,
                          priors=priors, levels=preds.levels[priors])


def batch_item(value: Any, b: int) -> Any:
    """Image ``b`` of a batch-first tensor, or of each tensor of a tuple/list of them, as a
    batch of one (a batch of one is shared by every image); None stays None."""
    if isinstance(value, Tensor):
        return value if value.shape[0] == 1 else value[b:b + 1]
    if isinstance(value, (tuple, list)):
        return type(value)(batch_item(v, b) for v in value)
    return value


def pad_masks(masks: Tensor, size: Tuple[int, int]) -> Tensor:
    """``(K, h, w)`` masks of an image's content (``img_shape``) padded with False at the
    bottom and right to the network input's ``size`` (where MMDetection's data preprocessor
    pads), or cropped to it."""
    height, width = size
    out = masks.new_zeros((masks.shape[0], height, width), dtype=torch.bool)
    h, w = min(height, masks.shape[1]), min(width, masks.shape[2])
    out[:, :h, :w] = masks[:, :h, :w].bool()
    return out


def upsampled_masks(logits: Tensor, stride: int, thr: float, size: Tuple[int, int]) -> Tensor:
    """RTMDet-ins' masks on the network input: ``(K, h, w)`` mask logits on the mask features
    upsampled by the finest ``stride`` (bilinear), a sigmoid above ``thr``, padded or cropped
    to ``size`` (as both RTMDet-ins heads' post-processing does without rescaling)."""
    if logits.shape[0] == 0:
        return torch.zeros((0, *size), dtype=torch.bool, device=logits.device)
    logits = F.interpolate(logits[None], scale_factor=stride, mode='bilinear')[0]
    return pad_masks(logits.sigmoid() > thr, size)


def matched_log_scores(per_level: Sequence[FlatPredictions], dets: ExplainedBoxes,
                       candidate_thr: float, match_iou_thr: float) -> Tensor:
    """Target scores for gradient-free methods: per perturbed copy and box, the (log) score of
    the best IoU-matched prediction of the box's class.

    Args:
        per_level (Sequence[FlatPredictions]): Predictions of ONE image's perturbed copies,
            per level, decoded for the box labels only (``level_candidates(...,
            classes=dets.labels)``: column k is box k's class). A level's batch is ``n`` or 1
            (unchanged by the perturbation).
        dets (ExplainedBoxes): The ``K`` boxes being explained.
        candidate_thr (float): A candidate counts as a prediction of the class when its score
            exceeds this (the detector's own candidate threshold).
        match_iou_thr (float): Minimum IoU with the explained box; below it the box is lost.

    Returns:
        Tensor: ``(n, K)`` log scores; ``-inf`` where the box is lost.
    """
    n = max(p.scores.shape[0] for p in per_level)
    num_boxes = len(dets)
    best_iou = per_level[0].scores.new_full((n, num_boxes), -1.0)
    best_log = per_level[0].log_scores.new_full((n, num_boxes), float('-inf'))
    for preds in per_level:
        if preds.class_boxes is not None:  # column k holds box k's class: its own box
            ious = box_iou(preds.class_boxes, dets.boxes).diagonal(dim1=-2, dim2=-1)
        else:
            ious = box_iou(preds.boxes, dets.boxes)  # (n_l, N_l, K)
        valid = (preds.scores > candidate_thr) & (ious >= match_iou_thr)
        level_iou, where = torch.where(valid, ious, ious.new_full((), -1.0)).max(dim=1)
        level_log = preds.log_scores.gather(1, where[:, None, :])[:, 0]  # (n_l, K)
        level_iou, level_log = level_iou.expand(n, -1), level_log.expand(n, -1)
        better = level_iou > best_iou
        best_iou = torch.where(better, level_iou, best_iou)
        best_log = torch.where(better, level_log, best_log)
    return best_log


def feature_module(model: nn.Module) -> Optional[nn.Module]:
    """The module whose outputs are the detector's features: the neck, or a neck-less
    backbone (None for a model with neither)."""
    return model.neck if getattr(model, 'with_neck', False) else getattr(model, 'backbone', None)


def feature_input_level(model: nn.Module, module: nn.Module, index: int) -> Optional[int]:
    """Output ``index`` of the module whose outputs are the detector's features
    (:func:`feature_module`) is feature level ``index``; None for any other module."""
    return index if module is feature_module(model) else None


def uses_deformable_attention(model: nn.Module) -> bool:
    """Whether ``model`` runs mmcv's ``MultiScaleDeformableAttention``: through it a loop of K
    backward passes beats a batched one (``grid_sample``'s backward has no batching rule, and
    vmap's per-box fallback with its copies took 16.9 s against the loop's 13.9 s: Deformable
    DETR R-50, 320 px, K = 8, 1 thread, same maps)."""
    from mmcv.ops import MultiScaleDeformableAttention
    return any(isinstance(m, MultiScaleDeformableAttention) for m in model.modules())


def samples_of(metas: Sequence[dict]) -> list:
    """``DetDataSample``s carrying ``metas`` (the forwards of two-stage and DETR detectors
    read the image geometry from them)."""
    from mmdet.structures import DetDataSample
    return [DetDataSample(metainfo=dict(meta)) for meta in metas]


def flat_results(results) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
    """Per-image ``InstanceData`` results as flat ``(bboxes, scores, labels, counts)``, image
    after image (rotated heads give mmrotate's ``RotatedBoxes``: their ``(K, 5)`` tensor)."""
    return (torch.cat([getattr(res.bboxes, 'tensor', res.bboxes) for res in results]),
            torch.cat([res.scores for res in results]),
            torch.cat([res.labels for res in results]), [len(res) for res in results])


def above_score_thr(bboxes: Tensor, scores: Tensor, labels: Tensor, counts: List[int],
                    cfg: dict) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
    """The flat results scoring above ``cfg['score_thr']``, each image's count updated: for
    heads whose own prediction keeps every top-k pair (no score threshold of their own)."""
    keep = scores > float(cfg.get('score_thr', 0.0) or 0.0)
    image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    counts = torch.bincount(image[keep], minlength=len(counts)).tolist()
    return bboxes[keep], scores[keep], labels[keep], counts


def decode_by_predict(model: nn.Module, cfg_owner: nn.Module, inputs: Tensor,
                      metas: List[dict], cfg: dict) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
    """The detector's own ``predict(..., rescale=True)`` of a preprocessed batch with the test
    config ``cfg`` set on ``cfg_owner`` for the call, as flat tensors."""
    from mmengine.config import ConfigDict
    saved = cfg_owner.test_cfg
    cfg_owner.test_cfg = ConfigDict(cfg)
    try:
        results = model.predict(inputs, samples_of(metas), rescale=True)
    finally:
        cfg_owner.test_cfg = saved
    return flat_results([r.pred_instances for r in results])


def split_dense_outputs(head: nn.Module, outputs: Sequence, third: str) -> tuple:
    """A dense head's eval-mode ``(cls_scores, bbox_preds[, <third>])`` per level, the third
    (objectness or score factor) ``[None] * levels`` when absent.

    Raises:
        ValueError: Another number of outputs (a head in training mode returns more).
    """
    if len(outputs) not in (2, 3):
        raise ValueError(f'{type(head).__name__} returned {len(outputs)} outputs; an '
                         f'eval-mode dense head returns (cls, bbox[, {third}]). Is the head '
                         f'in training mode?')
    cls_scores, bbox_preds = outputs[0], outputs[1]
    return cls_scores, bbox_preds, outputs[2] if len(outputs) == 3 else [None] * len(cls_scores)


def default_metas(batch: int, height: int, width: int) -> List[dict]:
    """Metainfo of a batch given without any: each image fills the whole input, unscaled."""
    return [dict(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0),
                 pad_shape=(height, width), batch_input_shape=(height, width))
            for _ in range(batch)]


def decode_with_predict_by_feat(head: nn.Module, outs, metas: List[dict], cfg: dict,
                                owner: Optional[type] = None
                                ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
    """A dense head's own ``predict_by_feat(..., rescale=True)``, as flat tensors (that of
    its base class ``owner`` when given)."""
    predict_by_feat = head.predict_by_feat if owner is None else \
        functools.partial(owner.predict_by_feat, head)
    return flat_results(predict_by_feat(*outs, batch_img_metas=metas, cfg=cfg, rescale=True))


class ExplainableDetector:
    """Base of the per-kind adapters (the contract is this module's docstring).

    Args:
        model (nn.Module): The unwrapped detector.
    """

    #: Short name of the kind, for messages.
    kind: str = 'detector'
    #: Columns of a box: 4 (xyxy) or 5 (rotated ``(cx, cy, w, h, angle)``, mmrotate's
    #: ``RotatedBoxes``; ``engine.core.geometry`` takes both).
    box_dim: int = 4
    #: Whether the K boxes' gradients run as one batched backward (``is_grads_batched``:
    #: vmap over the graph); False where a loop of K backward passes is faster.
    batched_gradients: bool = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        # The module that scores the boxes (a dense or DETR head; a two-stage RoI head's last
        # box head): where the defaults below read classes and the test config.
        self.head: nn.Module = getattr(model, 'bbox_head', None)
        # Per tuple of target layers and whether logits (else log scores) are differentiated:
        # the output keys the box scores do not depend on, found once by BoxCAM's probe
        # (engines built on one adapter share it).
        self.unused_outputs: Dict[Tuple[Tuple[str, ...], bool], Set[str]] = {}

    # ------------------------------------------------------------ what the detector is
    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)

    @property
    def class_names(self) -> List[str]:
        """The dataset's class names, or the class indices as strings."""
        meta = getattr(self.model, 'dataset_meta', None) or {}
        return list(meta.get('classes') or [str(i) for i in range(self.num_classes)])

    @property
    def test_cfg(self) -> dict:
        return self.head.test_cfg or {}

    @property
    def candidate_thr(self) -> float:
        """A candidate is a prediction of a class above this score (the head's own
        ``test_cfg.score_thr``)."""
        return float((self.test_cfg or {}).get('score_thr', 0.001) or 0.0)

    @property
    def predicts_masks(self) -> bool:
        """Whether :meth:`select` gives each detection its instance mask
        (:attr:`ExplainedBoxes.masks`)."""
        return False

    @property
    def predicts_keypoints(self) -> bool:
        """Whether :meth:`select` gives each detection its keypoints
        (:attr:`ExplainedBoxes.keypoints`) and :meth:`level_candidates` their visibilities."""
        return False

    @property
    def num_keypoints(self) -> int:
        """Keypoints per detection (0 for detectors without keypoints)."""
        return 0

    @property
    def skeleton(self) -> Optional[List[Tuple[int, int]]]:
        """The keypoint pairs a drawing joins (the dataset's), or None."""
        return None

    @property
    def selection_thr(self) -> float:
        """The score threshold :meth:`select` applies itself, as the detector's own
        post-processing does, before the caller's ``score_thr``: a lower ``score_thr`` cannot
        bring back boxes below it. 0 where :meth:`select` applies none."""
        return 0.0

    def default_target_layers(self) -> List[str]:
        """Layer paths whose outputs feed the box scores, one output per level: the neck's
        outputs, or the backbone's without a neck."""
        return ['neck'] if getattr(self.model, 'with_neck', False) else ['backbone']

    def token_grids(self, feats) -> Tuple[Tuple[int, int], ...]:
        """``(h, w)`` of each feature level as the detector's transformer flattens ``feats``
        into tokens, in token order; empty: the kind has no token sequences."""
        return ()

    @property
    def head_name(self) -> str:
        """The class name of the part that scores the boxes, for messages."""
        return type(self.head).__name__

    # ------------------------------------------------------------ candidates
    def extract_feat(self, inputs: Tensor):
        return self.model.extract_feat(inputs)

    def level_candidates(self, feats, classes: Optional[Tensor] = None,
                         metas: Optional[Sequence[dict]] = None,
                         proposals: Optional[Tensor] = None) -> List[FlatPredictions]:
        """Every candidate of ``feats`` (see the module docstring); ``classes`` restricts the
        class columns (column j is class ``classes[j]``); ``proposals`` (two-stage kinds)
        re-scores the candidates of an earlier call instead of proposing new ones."""
        raise NotImplementedError

    def candidates(self, inputs: Tensor, metas: Optional[Sequence[dict]] = None
                   ) -> FlatPredictions:
        """Every candidate of a batch (:meth:`level_candidates` of its features, joined);
        without ``metas`` each image fills the whole input."""
        if metas is None:
            metas = default_metas(inputs.shape[0], *inputs.shape[-2:])
        return FlatPredictions.cat(self.level_candidates(self.extract_feat(inputs),
                                                         metas=metas))

    def select(self, preds: FlatPredictions, score_thr: float, topk: int,
               metas: Optional[Sequence[dict]] = None) -> List[ExplainedBoxes]:
        raise NotImplementedError

    def head_input_level(self, module: nn.Module, index: int, num_outputs: int
                         ) -> Optional[int]:
        """The level whose head input is exactly output ``index`` of ``module`` (and that
        output feeds nothing else), or None: output ``i`` of the neck (or of a neck-less
        backbone) is feature level ``i``."""
        return feature_input_level(self.model, module, index)

    def rescore(self, feats, classes: Tensor, dets: ExplainedBoxes, match_iou_thr: float,
                metas: Optional[Sequence[dict]] = None,
                proposals: Optional[Tensor] = None) -> Tensor:
        """``(n, K)`` log scores of the boxes ``dets`` in (perturbed) features ``feats``
        of ``n`` copies of one image: the best IoU-matched candidate of each box's class
        (among the given ``proposals``' candidates where the kind has them)."""
        per_level = self.level_candidates(feats, classes=classes, metas=metas,
                                          proposals=proposals)
        return matched_log_scores(per_level, dets, self.candidate_thr, match_iou_thr)

    # ------------------------------------------------------------ batched inference
    def forward(self, inputs: Tensor):
        """The part of batched inference that needs no metainfo (dense heads: the whole
        network) on a preprocessed batch; :meth:`decode` takes its result."""
        return self.model(inputs, mode='tensor')

    def decode(self, outs, metas: List[dict], cfg: dict
               ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """The detector's own decoding + NMS with ``cfg`` (its test config, possibly with a
        raised threshold), boxes in each image's original pixels.

        Returns:
            tuple: ``bboxes`` (K, 4), ``scores`` (K,), ``labels`` (K,) of all images, image
            after image, and the number of boxes of each image.
        """
        raise NotImplementedError

    def decode_unbatched(self, outs, metas: List[dict], cfg: dict
                         ) -> Tuple[Tensor, Tensor, Tensor, List[int]]:
        """:meth:`decode` through the head's own ``predict_by_feat`` image by image (the
        reference a faster :meth:`decode` is tested against)."""
        return self.decode(outs, metas, cfg)

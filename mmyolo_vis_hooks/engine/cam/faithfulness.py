"""Is a box's saliency map faithful to the detector? Per-box metrics for any method's maps.

- **Deletion / insertion** (Petsiuk et al., RISE, BMVC 2018; for detectors D-RISE, CVPR 2021
  and ODAM, ICLR 2023): the pixels of the network input are replaced, most salient first, by a
  baseline image (deletion), or revealed onto the baseline (insertion), in ``steps`` equal
  steps; after each step the detector runs again and the box's own score is read. The area
  under that curve over the removed (revealed) fraction in [0, 1] is the metric: **lower is
  better for deletion, higher for insertion**. All steps of all boxes of an image run as
  batched forwards (``batch_size`` images each); the two end points (the input itself and the
  all-baseline image) are shared by every box and computed once.
- **The box's own score** after a perturbation: the score, for the box's class, of the
  prediction that overlaps the original box most (``engine.core.geometry.box_iou``), among the
  head's candidates (score above the head's ``test_cfg.score_thr``) with an IoU of at least
  ``match_iou_thr`` (``detectors.matched_log_scores``, AblationCAM's matching). **A box the
  model no longer detects at all** (no such candidate) **scores 0**: the curve is always
  defined and finite, so an AUC is never NaN.
- **Pointing game** (Zhang et al., "Top-down neural attention by excitation backprop",
  ECCV 2016): a hit when the map's maximum lies inside the ground-truth box the detection
  matches, with their tolerance of 15 pixels (of the original image) around the box.
- **Energy-based pointing game** (Score-CAM, Wang et al. 2020): the share of the map's energy
  inside that ground-truth box (``compose.energy_inside``).

A map without any energy (an unreliable box's, see ``reliability.py``) points nowhere: a miss
and an energy share of 0. A detection without a ground-truth box of its class at IoU >= 0.5
(a false positive) has no pointing-game or energy value.

Everything happens in the network input the data preprocessor made (letterboxed). The maps are
the methods' maps on that input (``BoxCAMResult.box_maps()``, the same alignment as drawn) and
only the original image's pixels inside it are ordered and replaced: the letterbox padding is
left as it is. Ties in a map (a flat or uniform map) are broken by a fixed-seed random order
(its own generator: no global RNG is drawn from), so a map without information removes pixels
in random order, not row by row.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import check_choice, check_int, check_number, owned_by
from ..core.devices import in_network_layout
from ..core.geometry import (box_corners, boxes_to_original, input_geometry, is_rotated,
                             same_label_iou)
from ..core.model_state import autocast_off, preserved_model_state
from ..detectors import ExplainedBoxes, explainable_detector
from .compose import energy_inside

BASELINES = ('blur', 'mean')
# Zhang et al. 2016: a hit within 15 pixels of the ground-truth box.
POINTING_TOLERANCE = 15.0
# A detection is scored against the ground-truth box it matches at this IoU (same class).
GT_MATCH_IOU = 0.5
_TIE_SEED = 0


@dataclass
class FaithfulnessCurves:
    """Deletion and insertion curves of the boxes of one image.

    Attributes:
        fractions (Tensor): ``(S + 1, )`` share of the image's pixels removed (deletion) or
            revealed (insertion) at each step, from 0 to 1.
        deletion (Tensor): ``(K, S + 1)`` each box's own score after each deletion step; 0
            where the box is no longer detected.
        insertion (Tensor): ``(K, S + 1)`` the same for insertion.
    """
    fractions: Tensor
    deletion: Tensor
    insertion: Tensor

    @property
    def deletion_auc(self) -> Tensor:
        """``(K, )`` area under each deletion curve (lower is better)."""
        return curve_auc(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> Tensor:
        """``(K, )`` area under each insertion curve (higher is better)."""
        return curve_auc(self.insertion, self.fractions)


def curve_auc(curves: Tensor, fractions: Tensor) -> Tensor:
    """Trapezoidal area under ``(..., S + 1)`` curves over ``fractions`` in [0, 1]."""
    return torch.trapezoid(curves, fractions, dim=-1)


def check_faithfulness_options(steps: int = 16, baseline: str = 'blur',
                               blur_sigma: float = 0.1, batch_size: int = 16,
                               match_iou_thr: float = 0.5,
                               tolerance: float = POINTING_TOLERANCE) -> None:
    """Checks the options of :class:`Faithfulness` (hooks and tools call it before any model).

    Raises:
        TypeError: An option of the wrong type. ValueError: a value outside what is accepted.
    """
    check_int('steps', steps, low=2, accepted='an int >= 2 (perturbation steps per curve)')
    check_choice('baseline', baseline, BASELINES)
    check_number('blur_sigma', blur_sigma, 0, 1, low_open=True,
                 accepted='a number in (0, 1] (share of the image\'s shorter side)')
    check_int('batch_size', batch_size, low=1)
    check_number('match_iou_thr', match_iou_thr, 0, 1)
    check_number('tolerance', tolerance, 0, accepted='a number >= 0 (pixels)')


def content_region(meta: Optional[Dict], input_size: Tuple[int, int]
                   ) -> Tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the original image's pixels inside the network input (the input
    minus the letterbox padding); the whole input without ``meta``."""
    height, width = input_size
    if meta is None:
        return 0, height, 0, width
    geo = input_geometry(meta)
    y0 = int(round(geo['top']))
    x0 = int(round(geo['left']))
    y1 = int(round(geo['top'] + geo['ori_h'] * geo['scale_y']))
    x1 = int(round(geo['left'] + geo['ori_w'] * geo['scale_x']))
    y0, x0 = max(0, min(y0, height - 1)), max(0, min(x0, width - 1))
    return y0, max(y0 + 1, min(y1, height)), x0, max(x0 + 1, min(x1, width))


def _gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(C, h, w)`` (reflected borders; kernel of 2*3 sigma + 1)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, image.shape[-1] - 1, image.shape[-2] - 1)
    if radius < 1:
        return image.clone()
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    out = F.pad(image[None], (radius, radius, 0, 0), mode='reflect')
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode='reflect')
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return out[0]


def baseline_image(inputs: Tensor, region: Tuple[int, int, int, int], kind: str = 'blur',
                   blur_sigma: float = 0.1) -> Tensor:
    """The image pixels are removed to (revealed from): ``(3, H, W)``, equal to ``inputs``
    outside ``region``.

    Args:
        inputs (Tensor): ``(3, H, W)`` preprocessed input.
        region (tuple): ``(y0, y1, x0, x1)`` of the image content (:func:`content_region`).
        kind (str): ``'blur'``: the content blurred with a Gaussian of ``blur_sigma`` times its
            shorter side (RISE's insertion substrate: shapes and colours stay, edges go);
            ``'mean'``: the content's per-channel mean (a constant image). Defaults to 'blur'.
        blur_sigma (float): See ``kind``. Defaults to 0.1.
    """
    y0, y1, x0, x1 = region
    content = inputs[:, y0:y1, x0:x1]
    if kind == 'mean':
        filled = content.mean(dim=(1, 2), keepdim=True).expand_as(content)
    else:
        filled = _gaussian_blur(content, blur_sigma * min(content.shape[-2:]))
    out = inputs.clone()
    out[:, y0:y1, x0:x1] = filled
    return out


def saliency_ranks(maps: Tensor, region: Tuple[int, int, int, int]) -> Tensor:
    """``(K, H, W)`` rank of each pixel in each map's order (0 = most salient; ties in a fixed
    random order); pixels outside ``region`` get a rank past every content pixel."""
    num, height, width = maps.shape
    y0, y1, x0, x1 = region
    content = maps[:, y0:y1, x0:x1].reshape(num, -1).float()
    count = content.shape[1]
    generator = torch.Generator().manual_seed(_TIE_SEED)
    ranks = torch.full((num, height, width), count, dtype=torch.long)
    for k in range(num):
        perm = torch.randperm(count, generator=generator)
        order = perm[torch.argsort(content[k].cpu()[perm], descending=True, stable=True)]
        rank = torch.empty(count, dtype=torch.long)
        rank[order] = torch.arange(count)
        ranks[k, y0:y1, x0:x1] = rank.view(y1 - y0, x1 - x0)
    return ranks.to(maps.device)


class Faithfulness:
    """Deletion and insertion curves of detected boxes for their saliency maps.

    Args:
        model (nn.Module): The (unwrapped) MMYOLO detector whose boxes were explained.
        steps (int): Perturbation steps per curve (``steps + 1`` points, both ends
            included). Defaults to 16.
        baseline (str): What removed pixels become: ``'blur'`` (a Gaussian-blurred copy of
            the image) or ``'mean'`` (the image's per-channel mean). Defaults to 'blur'.
        blur_sigma (float): Blur: Gaussian sigma as a share of the image's shorter side.
            Defaults to 0.1.
        batch_size (int): Perturbed images per forward. Defaults to 16.
        match_iou_thr (float): A perturbed prediction of the box's class is the box when its
            IoU with the original box is at least this; the best-overlapping one counts.
            Defaults to 0.5.

    The model runs in eval mode without gradients, in float32 inside an autocast region too
    (``autocast_off``); its modes, ``requires_grad``, ``.grad``, buffers and the RNG states
    are restored afterwards (``preserved_model_state``).
    """

    def __init__(self, model: nn.Module, steps: int = 16, baseline: str = 'blur',
                 blur_sigma: float = 0.1, batch_size: int = 16,
                 match_iou_thr: float = 0.5) -> None:
        with owned_by('Faithfulness'):
            check_faithfulness_options(steps, baseline, blur_sigma, batch_size, match_iou_thr)
        self.detector = explainable_detector(model)
        self.model = self.detector.model
        self.steps = steps
        self.baseline = baseline
        self.blur_sigma = float(blur_sigma)
        self.batch_size = batch_size
        self.match_iou_thr = float(match_iou_thr)

    def __call__(self, inputs: Tensor, boxes: ExplainedBoxes, maps: Tensor,
                 meta: Optional[Dict] = None) -> FaithfulnessCurves:
        """Curves of the ``K`` boxes of ONE image.

        Args:
            inputs (Tensor): ``(1, 3, H, W)`` or ``(3, H, W)`` preprocessed input.
            boxes (ExplainedBoxes): The boxes (network-input pixels, labels).
            maps (Tensor): ``(K, H, W)`` their saliency maps on that input (any scale: only
                the order matters), e.g. ``BoxCAMResult.box_maps()``.
            meta (dict, optional): The image's metainfo: only its pixels are perturbed, not
                the letterbox padding. Defaults to None (the whole input).
        """
        image = inputs[0] if inputs.dim() == 4 else inputs
        num, height, width = len(boxes), image.shape[-2], image.shape[-1]
        if maps.shape != (num, height, width):
            raise ValueError(f'maps must be (K, H, W) = ({num}, {height}, {width}) for '
                             f'{num} boxes on a {height}x{width} input, got '
                             f'{tuple(maps.shape)}')
        fractions = torch.linspace(0, 1, self.steps + 1)
        if num == 0:
            empty = torch.zeros((0, self.steps + 1))
            return FaithfulnessCurves(fractions, empty, empty.clone())
        region = content_region(meta, (height, width))
        substrate = baseline_image(image, region, self.baseline, self.blur_sigma)
        ranks = saliency_ranks(torch.nan_to_num(maps.detach().float(), nan=0.0), region)
        count = (region[1] - region[0]) * (region[3] - region[2])
        counts = torch.round(fractions * count).long().tolist()
        with preserved_model_state(self.model), autocast_off(self.model), torch.no_grad():
            self.model.eval()
            ends = self._scores(torch.stack([image, substrate]), boxes, meta)  # (2, K)
            # Inner steps: (box, step) pairs; deletion first, then insertion.
            jobs = [(mode, k, i) for mode in (0, 1) for k in range(num)
                    for i in range(1, self.steps)]
            inner = torch.zeros(len(jobs))
            for start in range(0, len(jobs), self.batch_size):
                chunk = jobs[start:start + self.batch_size]
                batch = torch.stack([
                    torch.where(ranks[k] < counts[i], substrate, image) if mode == 0 else
                    torch.where(ranks[k] < counts[i], image, substrate)
                    for mode, k, i in chunk])
                scores = self._scores(batch, boxes, meta)  # (n, K)
                own = torch.tensor([k for _, k, _ in chunk], device=scores.device)
                inner[start:start + len(chunk)] = scores[torch.arange(len(chunk)), own].cpu()
        ends = ends.cpu()
        inner = inner.view(2, num, self.steps - 1)
        deletion = torch.cat([ends[0][:, None], inner[0], ends[1][:, None]], dim=1)
        insertion = torch.cat([ends[1][:, None], inner[1], ends[0][:, None]], dim=1)
        return FaithfulnessCurves(fractions, deletion, insertion)

    def of_data(self, data: dict, result) -> FaithfulnessCurves:
        """Curves of a :class:`BoxCAMResult` for the collated batch of one image it explains
        (``BoxCAM.explain_data``'s input): the data preprocessor runs again (eval mode)."""
        processed = self.model.data_preprocessor(data, False)
        meta = dict(processed['data_samples'][0].metainfo)
        return self(processed['inputs'], result.detections, result.box_maps(), meta)

    def _scores(self, batch: Tensor, boxes: ExplainedBoxes,
                meta: Optional[dict] = None) -> Tensor:
        """``(n, K)`` each box's own score in each image of ``batch`` (0 where lost)."""
        feats = self.detector.extract_feat(in_network_layout(batch, self.model))
        log_scores = self.detector.rescore(feats, boxes.labels, boxes, self.match_iou_thr,
                                           None if meta is None else [meta])
        return log_scores.exp()  # exp(-inf) = 0: the box is no longer detected


def _hull(boxes) -> np.ndarray:
    """The xyxy box around each box (rotated ones: around their corners)."""
    if not is_rotated(boxes):
        return np.asarray(boxes, np.float64).reshape(-1, 4)
    corners = box_corners(torch.as_tensor(np.asarray(boxes, np.float32))).double()
    return torch.cat([corners.amin(dim=1), corners.amax(dim=1)], dim=1).numpy()


def match_ground_truth(boxes: np.ndarray, labels: np.ndarray, gt_boxes: np.ndarray,
                       gt_labels: np.ndarray, iou_thr: float = GT_MATCH_IOU) -> np.ndarray:
    """Per detection, the index of the ground-truth box of its class it overlaps most (IoU at
    least ``iou_thr``), or -1 (a false positive). Boxes in the same pixels, xyxy or rotated
    ``(K, 5)``: rotated detections meet rotated ground truth by rotated IoU, and xyxy ground
    truth with their axis-aligned hull (and the other way round)."""
    if is_rotated(boxes) != is_rotated(gt_boxes):
        boxes, gt_boxes = _hull(boxes), _hull(gt_boxes)
    dim = 5 if is_rotated(boxes) else 4
    boxes = np.asarray(boxes, np.float64).reshape(-1, dim)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, dim)
    if not len(boxes) or not len(gt_boxes):
        return np.full(len(boxes), -1, dtype=np.int64)
    ious = same_label_iou(boxes, labels, gt_boxes, gt_labels)  # (K, G), -1 across classes
    best = ious.argmax(axis=1)
    return np.where(ious[np.arange(len(boxes)), best] >= iou_thr, best, -1)


def pointing_hits(maps: Tensor, gt_boxes: Tensor, tolerance: float = POINTING_TOLERANCE,
                  gt_masks: Optional[Tensor] = None) -> List[bool]:
    """Pointing game per map: does its maximum lie within ``tolerance`` pixels of its box
    (of its ground-truth mask, where given)?

    Args:
        maps (Tensor): ``(K, H, W)`` maps on the image the boxes are given in.
        gt_boxes (Tensor): ``(K, 4)`` xyxy (or ``(K, 5)`` rotated), box k for map k, in pixels
            of that image.
        tolerance (float): Pixels around the box that still count (Zhang et al. 2016: 15).
            Defaults to 15.
        gt_masks (Tensor, optional): ``(K, H, W)`` bool, mask k for map k: the distance is
            then to the nearest mask pixel (0 inside the mask). Defaults to None.

    A map without energy (all zeros) points nowhere: a miss.
    """
    import cv2
    hits = []
    width = maps.shape[-1]
    for k, (heat, box) in enumerate(zip(maps, gt_boxes.float())):
        if not float(heat.clamp(min=0).max()) > 0:
            hits.append(False)
            continue
        flat = int(torch.argmax(heat))
        if gt_masks is not None:
            outside = (~gt_masks[k].bool()).cpu().numpy().astype(np.uint8)
            if outside.all():  # an empty mask: nothing to point at
                hits.append(False)
                continue
            # distance of each pixel to the nearest mask pixel (0 inside the mask)
            distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            hits.append(float(distance.reshape(-1)[flat]) <= tolerance)
            continue
        # Pixel centre; the distance to the box is 0 inside it.
        x, y = flat % width + 0.5, flat // width + 0.5
        if len(box) == 5:  # a rotated box: the point in the box's own frame
            cx, cy, w, h, angle = (float(v) for v in box)
            along_w = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
            along_h = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
            dx, dy = max(abs(along_w) - w / 2, 0.0), max(abs(along_h) - h / 2, 0.0)
        else:
            dx = max(float(box[0]) - x, 0.0, x - float(box[2]))
            dy = max(float(box[1]) - y, 0.0, y - float(box[3]))
        hits.append(math.hypot(dx, dy) <= tolerance)
    return hits


def energy_shares(maps: Tensor, gt_boxes: Tensor, gt_masks: Optional[Tensor] = None
                  ) -> List[float]:
    """Energy-based pointing game per map: the share of map k's energy inside box k, or
    inside mask k of ``(K, H, W)`` ``gt_masks`` where given (``compose.energy_inside``); 0
    for a map without energy."""
    shares = []
    for k, (heat, box) in enumerate(zip(maps, gt_boxes)):
        share = energy_inside(heat, box[None], None if gt_masks is None else gt_masks[k:k + 1])
        shares.append(0.0 if share is None else share)
    return shares


@dataclass
class GroundTruthScores:
    """Pointing game and energy of one image's box maps against the ground truth.

    Attributes:
        matched (np.ndarray): ``(K, )`` index of each box's ground-truth box, -1 when none.
        pointing (list[float | None]): 1.0 hit / 0.0 miss per box; None without a GT match.
        energy (list[float | None]): Share of the map's energy inside its GT box, per box;
            None without a GT match.
    """
    matched: np.ndarray
    pointing: List[Optional[float]]
    energy: List[Optional[float]]


def ground_truth_scores(maps: Tensor, boxes: Tensor, labels: Sequence[int],
                        gt_boxes: np.ndarray, gt_labels: Sequence[int],
                        tolerance: float = POINTING_TOLERANCE,
                        gt_masks: Optional[np.ndarray] = None) -> GroundTruthScores:
    """Pointing game and energy-based pointing game of per-box maps on the original image.
    A detection is matched to a ground-truth object by box IoU; with ``gt_masks`` the game
    is played on the matched object's mask instead of its box.

    Args:
        maps (Tensor): ``(K, H, W)`` maps on the original image (``box_maps(meta)``).
        boxes (Tensor): ``(K, 4)`` the detections, xyxy in original-image pixels, or rotated
            ``(K, 5)`` (:func:`match_ground_truth`).
        labels (Sequence[int]): Their classes.
        gt_boxes (np.ndarray): ``(G, 4)`` ground-truth xyxy boxes (or ``(G, 5)`` rotated),
            original-image pixels.
        gt_labels (Sequence[int]): Their classes (model label indices).
        tolerance (float): Pointing-game tolerance in pixels. Defaults to 15.
        gt_masks (np.ndarray, optional): ``(G, H, W)`` bool ground-truth instance masks on
            the original image (the maps' size). Defaults to None (boxes).
    """
    matched = match_ground_truth(boxes.detach().cpu().numpy(), np.asarray(labels), gt_boxes,
                                 np.asarray(gt_labels))
    pointing: List[Optional[float]] = [None] * len(matched)
    energy: List[Optional[float]] = [None] * len(matched)
    keep = np.flatnonzero(matched >= 0)
    if len(keep):
        gt_boxes = np.asarray(gt_boxes, np.float32)
        gt_boxes = gt_boxes.reshape(-1, 5 if is_rotated(gt_boxes) else 4)
        targets = torch.as_tensor(gt_boxes[matched[keep]])
        chosen = maps[torch.as_tensor(keep)].float().cpu()
        masks = None if gt_masks is None else torch.as_tensor(
            np.asarray(gt_masks, dtype=bool)[matched[keep]])
        if masks is not None and tuple(masks.shape[-2:]) != tuple(chosen.shape[-2:]):
            raise ValueError(f'gt_masks of size {tuple(masks.shape[-2:])} for maps of size '
                             f'{tuple(chosen.shape[-2:])}: both must be the original image\'s')
        for k, hit, share in zip(keep, pointing_hits(chosen, targets, tolerance, masks),
                                 energy_shares(chosen, targets, masks)):
            pointing[k] = float(hit)
            energy[k] = float(share)
    return GroundTruthScores(matched, pointing, energy)


def detections_on_original(boxes: ExplainedBoxes, meta: Dict) -> Tensor:
    """The explained boxes in original-image pixels."""
    return boxes_to_original(boxes.boxes.detach().float().cpu(), meta)


__all__ = ['BASELINES', 'POINTING_TOLERANCE', 'GT_MATCH_IOU', 'Faithfulness',
           'FaithfulnessCurves', 'GroundTruthScores', 'baseline_image',
           'check_faithfulness_options', 'content_region', 'curve_auc', 'detections_on_original',
           'energy_shares', 'ground_truth_scores', 'match_ground_truth', 'pointing_hits',
           'saliency_ranks']

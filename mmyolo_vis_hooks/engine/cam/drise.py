"""D-RISE (Petsiuk et al., CVPR 2021, "Black-box explanation of object detectors via saliency
maps"): per-box saliency from the detector's answers on randomly masked copies of the image.

Masks are the paper's (RISE's) generation: ``N`` binary ``s x s`` grids whose cells are kept
with probability ``p``, upsampled bilinearly to ``(s + 1) * cell`` pixels per side
(``cell = ceil(H / s)``, ``ceil(W / s)``) and cropped to ``H x W`` at a random shift in
``[0, cell)``: smooth masks whose edges fall anywhere, not only on the grid. The grids and
shifts of all ``N`` masks are drawn up front from a private ``torch.Generator`` (a few bytes per
mask; the global RNG is never touched); the full-size masks exist only one batch at a time,
so memory grows with the batch size, not with ``N``.

Masked image = image x mask in the model's PREPROCESSED input space (after the data
preprocessor's normalisation), as the authors' RISE code multiplies the normalised tensor: a
masked pixel becomes the preprocessor's mean colour (black for YOLOv5/v6/v7/v8 and YOLOX,
whose configs use mean 0 and std 255; the dataset mean for RTMDet and PPYOLOE), the value the
network saw least signal in during training, and no pixel-space round trip (which would need
the letterbox geometry inverted for every mask) is needed.

Weight of mask ``i`` for box ``t``: the best match among ALL the masked image's predictions
(every candidate, before any threshold or NMS: the detector's ``candidates``):

    w_i,t = max_j IoU(L_t, L_j) x cos(P_t, P_j) x O_j

with ``L`` the boxes, ``P`` the class-score vectors and ``O_j`` the prediction's objectness
probability. ``P_t`` is the explained box's own class-score vector at its prior in the
unmasked image. For heads with objectness (YOLOv5, YOLOv7, YOLOX) the class vector's direction
is that of ``sigmoid(cls)`` and ``O_j = sigmoid(obj)``. The other heads (YOLOv6, YOLOv8,
RTMDet, PPYOLOE) have no objectness: the factor is 1 there (``missing_objectness='one'``, the
paper's formula). Their sigmoid class scores are joint (object x class) confidences whose
magnitude the cosine ignores, so ``'confidence'`` offers the prediction's largest class score
as the factor instead (xaitk-saliency's advice for detections without objectness). Measured on
the demo detector with its objectness folded into the class scores (a head without
objectness; 2 generated images, 6 boxes each, 300 masks, grid 8), both keep every map's peak
inside its box; the ratio of a map's mean inside its box to its mean outside, averaged per
image, is 3.0 / 3.6 with ``'one'`` and 3.3 / 3.8 with ``'confidence'`` (3.4 / 3.9 with the real
objectness): a small difference, so the default follows the paper.

Saliency of box ``t``: ``S_t = sum_i w_i,t M_i`` divided, per pixel, by how often the pixel was
kept, ``sum_i M_i`` (``normalize='coverage'``, xaitk-saliency's ``DRISEScoring``): the ratio
estimate of ``E[w | pixel kept]``, the quantity the paper's ``S_t / (N p)`` estimates, with the
sampling noise of the coverage removed; ``'expected'`` divides by ``N p`` as the paper does.
One forward of a mask batch serves every box of the image.

Instance masks (``similarity='mask'``, instance-segmentation detectors): ``L`` are the
instances' predicted masks and the IoU is the masks' IoU. The masks of a prediction exist only
after the detector's own post-processing (mask decoding follows NMS), so then ``j`` runs over
the masked image's final detections (the detector's ``select`` at its own thresholds, as the
paper's detector outputs are) instead of every candidate.

Mask sampling: ``'random'`` draws the ``N`` masks independently (the paper). ``'balanced'``
draws each mask exactly as ``'random'`` does, but a block of masks together
(:func:`balanced_grids`, stratified shifts): the map's limit is the same, its Monte-Carlo noise
for a given ``N`` lower. Centring the weights by their mean (a control variate) would add
nothing: with the coverage normalisation ``sum_i (w_i - c) M_i / sum_i M_i`` is the map minus
``c``.
"""
import math
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.checks import check_choice, check_int, check_number
from ..core.devices import prefers_channels_last
from ..core.geometry import box_iou
from ..detectors.base import ExplainedBoxes, FlatPredictions

NORMALIZATIONS = ('coverage', 'expected')
SAMPLINGS = ('random', 'balanced')
MISSING_OBJECTNESS = ('one', 'confidence')
# What L in IoU(L_t, L_j) is: the boxes, or the instance masks.
SIMILARITIES = ('box', 'mask')


def check_drise_options(num_masks: int, grid_size: int, keep_prob: float, batch_size: int,
                        seed) -> None:
    """Raises TypeError/ValueError for a bad D-RISE option (what was given, what is accepted).
    """
    check_int('num_masks', num_masks, low=1)
    check_int('grid_size', grid_size, low=1)
    check_number('keep_prob', keep_prob, 0, 1, low_open=True, high_open=True)
    check_int('batch_size', batch_size, low=1)
    if seed is not None:
        check_int('mask_seed', seed, low=0, accepted='an int >= 0 or None (a random seed)')


class RiseMasks:
    """The ``N`` masks of one D-RISE run for images of one size, generated batch by batch.

    Args:
        num_masks (int): ``N``.
        grid_size (int): ``s``: the grid has ``s x s`` cells.
        keep_prob (float): ``p``: probability that a cell is kept (mask value 1).
        size (tuple[int, int]): ``(H, W)`` of the network input.
        seed (int, optional): Seed of the private generator; None draws one from the OS.
            Defaults to 0.
        device (torch.device | str): Where the masks are made. Defaults to 'cpu'.
        sampling (str): ``'random'``: independent masks (the paper's). ``'balanced'``: every
            mask, on its own, is drawn exactly as a ``'random'`` one (independent cells kept
            with probability ``p``, a uniform shift), but the masks of a block are drawn
            together so that the block's cells and shifts are balanced (see
            :func:`balanced_grids`). Defaults to 'random'.
    """

    def __init__(self, num_masks: int, grid_size: int, keep_prob: float,
                 size: Tuple[int, int], seed=0, device='cpu', sampling: str = 'random'
                 ) -> None:
        check_choice('sampling', sampling, SAMPLINGS)
        generator = torch.Generator()
        if seed is None:
            generator.seed()  # from the OS: the global generator is left alone
        else:
            generator.manual_seed(seed)
        self.size = (int(size[0]), int(size[1]))
        self.grid_size = grid_size
        self.keep_prob = keep_prob
        self.device = device
        self.sampling = sampling
        self.cell = tuple(math.ceil(side / grid_size) for side in self.size)
        if sampling == 'random':
            self.grids = torch.rand((num_masks, grid_size, grid_size), generator=generator) \
                < keep_prob
            self.shifts = torch.stack([torch.randint(0, c, (num_masks, ), generator=generator)
                                       for c in self.cell], dim=1)  # (N, 2): dy, dx
        else:
            self.grids = balanced_grids(num_masks, grid_size, keep_prob, generator)
            self.shifts = torch.stack([balanced_choices(num_masks, c, generator)
                                       for c in self.cell], dim=1)

    def __len__(self) -> int:
        return int(self.grids.shape[0])

    def masks(self, start: int, stop: int) -> Tensor:
        """``(stop - start, H, W)`` float masks in [0, 1]."""
        grids = self.grids[start:stop].to(self.device, torch.float32)[:, None]
        up = F.interpolate(grids, size=tuple((self.grid_size + 1) * c for c in self.cell),
                           mode='bilinear', align_corners=False)[:, 0].clamp_(0, 1)  # rounding
        # Each mask cropped at its own shift: two gathers (parallel), not a loop of slices.
        height, width = self.size
        shifts = self.shifts[start:stop].to(up.device)
        rows = shifts[:, :1] + torch.arange(height, device=up.device)  # (n, H)
        cols = shifts[:, 1:] + torch.arange(width, device=up.device)  # (n, W)
        up = up.gather(1, rows[..., None].expand(-1, -1, up.shape[2]))
        return up.gather(2, cols[:, None].expand(-1, height, -1))

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """The masks in order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            yield self.masks(start, min(start + batch_size, len(self)))


def balanced_choices(num: int, count: int, generator: torch.Generator) -> Tensor:
    """``(num,)`` values in ``[0, count)``, each uniform on its own, every value equally often
    in each block of ``count`` (a random permutation per block): stratified shifts."""
    blocks = [torch.randperm(count, generator=generator) for _ in range(-(-num // count))]
    return torch.cat(blocks)[:num]


def _gf2_rank(rows: Tensor) -> int:
    rows = [int(''.join(str(int(b)) for b in row), 2) for row in rows]
    rank = 0
    for bit in reversed(range(max(rows).bit_length() if any(rows) else 0)):
        pivot = next((r for r in rows if r >> bit & 1), None)
        if pivot is None:
            continue
        rows = [r ^ pivot if r >> bit & 1 else r for r in rows if r != pivot]
        rank += 1
    return rank


def balanced_grids(num: int, grid_size: int, keep_prob: float,
                   generator: torch.Generator) -> Tensor:
    """``(num, s, s)`` boolean grids, each distributed on its own exactly as independent cells
    kept with probability ``keep_prob``, drawn in balanced blocks.

    ``keep_prob = 0.5``: a randomised orthogonal array of strength 3 (Owen 1992). Each cell
    ``c`` gets a distinct odd-weight vector ``v_c`` of ``GF(2)^r`` (``2^(r-1) >= s^2``); mask
    ``u`` of a block of ``2^r`` keeps cell ``c`` when ``<u, v_c> + f_c`` is odd, with a random
    flip ``f_c`` per cell and block (so each mask alone is uniform on ``{0, 1}^(s^2)``). Any 3
    odd-weight vectors are linearly independent, so in a whole block every cell, pair and
    triple of cells takes each of its values equally often: the sample covariances of cells
    that D-RISE's noise comes from cancel up to third order. The block's masks come in the
    order of a random basis, so every prefix of ``2^j`` masks is a subspace, balanced for
    most cells. Otherwise each cell is kept in exactly ``round(p B)`` masks of a block of
    ``B`` (the smallest block with ``p B`` an integer, up to 1000; an independent permutation
    per cell), i.e. balanced cells only.
    """
    cells = grid_size * grid_size
    if keep_prob == 0.5:
        dims = max(2, (cells - 1).bit_length() + 1)  # 2^(dims - 1) >= cells
        values = torch.arange(1 << dims)
        weights = sum((values >> bit) & 1 for bit in range(dims))
        odd = values[weights % 2 == 1]
        bits = (torch.arange(1 << dims)[:, None] >> torch.arange(dims)) & 1  # (2^r, r)
        blocks = []
        for _ in range(-(-num // (1 << dims))):
            vectors = odd[torch.randperm(len(odd), generator=generator)[:cells]]
            vector_bits = (vectors[:, None] >> torch.arange(dims)) & 1  # (cells, r)
            while True:  # a random basis: prefixes of 2^j masks are subspaces
                basis = torch.randint(0, 2, (dims, dims), generator=generator)
                if _gf2_rank(basis) == dims:
                    break
            masks_u = (bits @ basis) % 2  # (2^r, r): mask u in the basis' order
            flips = torch.randint(0, 2, (cells, ), generator=generator)
            blocks.append((masks_u @ vector_bits.T + flips) % 2 == 1)
        return torch.cat(blocks)[:num].view(num, grid_size, grid_size)
    block = next((b for b in range(1, 1001) if abs(keep_prob * b - round(keep_prob * b)) < 1e-9),
                 None)
    if block is None:  # no small exact block: independent cells
        return torch.rand((num, grid_size, grid_size), generator=generator) < keep_prob
    kept = round(keep_prob * block)
    blocks = []
    for _ in range(-(-num // block)):
        order = torch.rand((block, cells), generator=generator).argsort(dim=0)
        blocks.append(order < kept)
    return torch.cat(blocks)[:num].view(num, grid_size, grid_size)


def masked_copies(image: Tensor, masks: Tensor) -> Tensor:
    """``(n, 3, H, W)`` copies of ``image`` ``(3, H, W)`` times ``masks`` ``(n, H, W)``, made
    directly in the layout the network prefers (``core.devices.in_network_layout``): one pass
    over the batch instead of a product and a layout copy."""
    masks = masks.to(image.dtype)
    if not prefers_channels_last(image.device):
        return image[None] * masks[:, None]
    channels_last = torch.mul(image.permute(1, 2, 0)[None], masks[..., None])  # (n, H, W, 3)
    return channels_last.permute(0, 3, 1, 2)


def prediction_objectness(preds: FlatPredictions, missing_objectness: str = 'one') -> Tensor:
    """``(B, N)`` the objectness factor of every prediction: the head's objectness
    probability, or for heads without one the prediction's confidence (largest class score,
    ``'confidence'``) or 1 (``'one'``)."""
    if preds.objectness is not None:
        return preds.objectness
    if missing_objectness == 'one':
        return preds.scores.new_ones(preds.scores.shape[:2])
    return preds.scores.amax(dim=-1)


def drise_weights(target_boxes: Tensor, target_vectors: Tensor, boxes: Tensor,
                  vectors: Tensor, objectness: Tensor) -> Tensor:
    """The paper's similarity, maximised over the predictions of each masked image.

    Args:
        target_boxes (Tensor): ``(K, 4)`` xyxy boxes explained.
        target_vectors (Tensor): ``(K, C)`` their class-score vectors.
        boxes (Tensor): ``(n, P, 4)`` xyxy boxes of the masked images' predictions.
        vectors (Tensor): ``(n, P, C)`` their class-score vectors (only the direction counts).
        objectness (Tensor): ``(n, P)`` their objectness factor.

    Returns:
        Tensor: ``(n, K)`` weights ``max_j IoU x cos x objectness`` in [0, 1].
    """
    tiny = torch.finfo(vectors.dtype).tiny
    target_unit = target_vectors / target_vectors.norm(dim=-1, keepdim=True).clamp(min=tiny)
    # cos x objectness = (vector . target unit) x (objectness / |vector|), 0 for a 0 vector
    norms = vectors.norm(dim=-1)
    factor = torch.where(norms > 0, objectness / norms.clamp(min=tiny), 0.)
    similarity = (vectors @ target_unit.T).mul_(factor[..., None])  # (n, P, K)
    ious = box_iou(boxes, target_boxes)  # (n, P, K)
    return similarity.mul_(ious).amax(dim=1)


def mask_weights(image: Tensor, dets: ExplainedBoxes, base: FlatPredictions,
                 predict: Callable[[Tensor], FlatPredictions], masks: RiseMasks,
                 batch_size: int, missing_objectness: str = 'one', similarity: str = 'box',
                 select: Optional[Callable[[FlatPredictions], List[ExplainedBoxes]]] = None
                 ) -> Iterator[Tuple[Tensor, Tensor]]:
    """The masks, ``batch_size`` at a time, with their ``(n, K)`` weights for the boxes:
    one forward of each batch of masked copies serves every box (arguments: :func:`drise_maps`).
    """
    check_choice('missing_objectness', missing_objectness, MISSING_OBJECTNESS)
    check_choice('similarity', similarity, SIMILARITIES)
    height, width = image.shape[-2:]
    if masks.size != (height, width):
        raise ValueError(f'masks of size {masks.size} for an image of size {(height, width)}')
    target_boxes = dets.boxes.detach().float()
    target_vectors = base.scores[0, dets.priors].detach().float()
    for batch in masks.batches(batch_size):
        batch = batch.to(image.device)
        preds = predict(masked_copies(image, batch))
        if similarity == 'mask':
            yield batch, drise_mask_weights(dets.masks, target_vectors, select(preds), preds,
                                            missing_objectness)
        else:
            yield batch, drise_weights(target_boxes, target_vectors, preds.boxes.float(),
                                       preds.scores.float(),
                                       prediction_objectness(preds, missing_objectness).float())


def weighted_mask_sum(pairs: Iterable[Tuple[Tensor, Tensor]], num_masks: int,
                      keep_prob: float, normalize: str = 'coverage') -> Tensor:
    """``(K, H, W)`` maps ``sum_i w_i,t M_i`` normalised (:func:`drise_maps`) from
    ``(masks (n, H, W), weights (n, K))`` batches of ``num_masks`` masks in all."""
    check_choice('normalize', normalize, NORMALIZATIONS)
    saliency = coverage = None
    for batch, weights in pairs:
        if saliency is None:
            saliency = batch.new_zeros((weights.shape[1], *batch.shape[1:]), dtype=torch.float32)
            coverage = batch.new_zeros(batch.shape[1:], dtype=torch.float32)
        saliency += torch.einsum('nk,nhw->khw', weights, batch)
        coverage += batch.sum(dim=0)
    if normalize == 'coverage':
        return saliency / coverage.clamp(min=torch.finfo(torch.float32).tiny)
    return saliency / (num_masks * keep_prob)


def mask_iou(masks: Tensor, refs: Tensor) -> Tensor:
    """``(P, K)`` IoU of ``(P, H, W)`` and ``(K, H, W)`` bool masks (0 for two empty ones)."""
    a = masks.flatten(1).float()
    b = refs.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1.0)


def drise_mask_weights(target_masks: Tensor, target_vectors: Tensor,
                       detections: Sequence[ExplainedBoxes], preds: FlatPredictions,
                       missing_objectness: str = 'one') -> Tensor:
    """``(n, K)`` weights ``max_j maskIoU x cos x objectness`` over each masked image's final
    detections ``j`` (``detections[i]``, with masks; their class vectors and objectness are
    their candidates' in ``preds``); 0 for an image without detections."""
    objectness = prediction_objectness(preds, missing_objectness)
    rows = []
    for i, det in enumerate(detections):
        if len(det) == 0:
            rows.append(target_vectors.new_zeros(len(target_vectors)))
            continue
        ious = mask_iou(det.masks.to(target_masks.device), target_masks)  # (P, K)
        vectors = preds.scores[i, det.priors].float()
        cosines = F.normalize(vectors, dim=-1) @ F.normalize(target_vectors, dim=-1).T
        rows.append((ious * cosines * objectness[i, det.priors].float()[:, None]).amax(dim=0))
    return torch.stack(rows)


def drise_maps(image: Tensor, dets: ExplainedBoxes, base: FlatPredictions,
               predict: Callable[[Tensor], FlatPredictions], masks: RiseMasks,
               batch_size: int, normalize: str = 'coverage',
               missing_objectness: str = 'one', similarity: str = 'box',
               select: Optional[Callable[[FlatPredictions], List[ExplainedBoxes]]] = None
               ) -> Tensor:
    """``(K, H, W)`` D-RISE saliency of the boxes of one image.

    Args:
        image (Tensor): ``(3, H, W)`` preprocessed image.
        dets (ExplainedBoxes): The ``K`` boxes explained.
        base (FlatPredictions): Predictions of the unmasked image (batch 1): the target
            class-score vectors are ``base.scores[0, dets.priors]``.
        predict (callable): A batch ``(n, 3, H, W)`` -> its :class:`FlatPredictions`.
        masks (RiseMasks): The masks (their size is the image's).
        batch_size (int): Masked images per forward.
        normalize (str): ``'coverage'`` or ``'expected'`` (module docstring).
            Defaults to 'coverage'.
        missing_objectness (str): ``'one'`` or ``'confidence'`` (module docstring).
            Defaults to 'one'.
        similarity (str): ``'box'`` (box IoU over every candidate) or ``'mask'`` (mask IoU
            over the final detections; needs ``dets.masks`` and ``select``). Defaults to 'box'.
        select (callable, optional): A masked batch's predictions -> its final detections
            with masks (the detector's own selection); for ``similarity='mask'``.
    """
    check_choice('normalize', normalize, NORMALIZATIONS)
    if similarity == 'mask' and (dets.masks is None or select is None):
        raise ValueError('D-RISE similarity=\'mask\' needs instance masks: this detector '
                         'predicts boxes only (use similarity=\'box\')')
    return weighted_mask_sum(mask_weights(image, dets, base, predict, masks, batch_size,
                                          missing_objectness, similarity, select),
                             len(masks), masks.keep_prob, normalize)

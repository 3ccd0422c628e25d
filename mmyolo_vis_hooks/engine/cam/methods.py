"""CAM methods for boxes. Each method is a small class with ONE override point.

The weight formulas are grad-cam 1.5's (``pytorch_grad_cam/*_cam.py``), written for a stack of
per-box gradients: where grad-cam computes one map for the sum of its targets, a method here
gets, for one image and one layer, the activation ``A`` ``(C, h, w)`` and the gradient of EACH
box's target ``G`` ``(K, C, h, w)``, and returns ``K`` raw maps. ReLU, per-layer normalisation,
resizing and the mean over layers happen afterwards (``compose.py``), exactly as grad-cam's
``compute_cam_per_layer`` / ``aggregate_multi_layers`` do.

Constructors only store options: no model is touched (grad-cam's ``BaseCAM.__init__`` calls
``model.eval()`` and registers hooks).

Input-level methods (``works_on_input``: D-RISE) perturb the image, not a layer: the engine
gives them an :class:`InputContext` (the preprocessed image, its boxes and predictions, and a
function predicting a batch of modified images) and needs no target layers for them. Their one
override point is :meth:`InputMethod.input_maps`.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Type

import torch
from torch import Tensor

from ..core.checks import check_choice, check_int, check_number
from .drise import (MISSING_OBJECTNESS, NORMALIZATIONS, SAMPLINGS, SIMILARITIES, RiseMasks,
                    check_drise_options, drise_maps)
from ..detectors.base import ExplainedBoxes, FlatPredictions
from .projection import first_component_projection


@dataclass
class LayerContext:
    """What a method sees for one image and one target-layer output.

    Attributes:
        activation (Tensor): ``(C, h, w)`` activation of this image.
        grads (Tensor, optional): ``(K, C, h, w)`` gradient of each box's target score w.r.t.
            the activation; None for gradient-free methods.
        box_mask (Tensor): ``(K, h, w)`` bool, the cells of this layer inside each box.
        rescore (callable, optional): Maps a batch of modified activations ``(n, C, h, w)`` to
            the ``(n, K)`` log target scores of the boxes, ``-inf`` for a lost box
            (gradient-free methods only).
        base_log_scores (Tensor, optional): ``(K, )`` log target scores without modification.
    """
    activation: Tensor
    grads: Optional[Tensor]
    box_mask: Tensor
    rescore: Optional[Callable[[Tensor], Tensor]] = None
    base_log_scores: Optional[Tensor] = None

    @property
    def num_boxes(self) -> int:
        return int(self.box_mask.shape[0])


@dataclass
class InputContext:
    """What an input-level method sees for one image.

    Attributes:
        image (Tensor): ``(3, H, W)`` preprocessed image (the data preprocessor's output).
        boxes (ExplainedBoxes): The ``K`` boxes explained.
        predictions (FlatPredictions): Predictions of the unmodified image (batch 1).
        predict (callable): Maps a batch of modified images ``(n, 3, H, W)`` to their
            :class:`FlatPredictions` (eval mode, no gradients).
        select (callable, optional): Maps such predictions to each image's final detections
            (the detector's own selection at its own thresholds, with masks for
            instance-segmentation detectors).
    """
    image: Tensor
    boxes: ExplainedBoxes
    predictions: FlatPredictions
    predict: Callable[[Tensor], FlatPredictions]
    select: Optional[Callable[[FlatPredictions], List[ExplainedBoxes]]] = None

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)


class BoxCAMMethod:
    """Base of all methods. Override :meth:`layer_map`.

    Class attributes:
        name (str): The name the method is chosen by.
        uses_gradients (bool): The engine computes per-box gradients for this method.
        needs_rescoring (bool): The engine provides ``LayerContext.rescore``.
        works_on_input (bool): The method perturbs the input image (:class:`InputMethod`):
            the engine calls ``input_maps`` once per image instead of ``layer_map`` per layer.
    """
    name = ''
    uses_gradients = True
    needs_rescoring = False
    works_on_input = False

    def layer_map(self, ctx: LayerContext) -> Tensor:
        """``(K, h, w)`` raw (pre-ReLU) map of each box on this layer."""
        raise NotImplementedError

    def map_and_magnitude(self, ctx: LayerContext) -> Tuple[Tensor, Tensor]:
        """The raw map and, per entry, the magnitude ``sum |terms|`` of what was summed into it
        (``(K, h, w)`` each): the scale of its float32 rounding noise (``reliability.py``).

        This default bounds the terms of LayerCAM and EigenGradCAM (``G_c * A_c``, projected
        with a unit vector) and of EigenCAM (``A_c``) by ``sum_c |G_c * A_c|`` or
        ``sum_c |A_c|``.
        """
        terms = ctx.activation.abs()[None]
        if ctx.grads is not None:
            terms = ctx.grads.abs() * terms
        magnitude = terms.sum(dim=1).expand(ctx.num_boxes, *terms.shape[-2:])
        return self.layer_map(ctx), magnitude


class ChannelWeightedMethod(BoxCAMMethod):
    """Methods whose map is a weighted sum of activation channels. Override
    :meth:`channel_weights`."""

    def channel_weights(self, ctx: LayerContext) -> Tensor:
        """``(K, C)`` weight of every channel for every box."""
        raise NotImplementedError

    def layer_map(self, ctx: LayerContext) -> Tensor:
        return self.map_and_magnitude(ctx)[0]

    def map_and_magnitude(self, ctx: LayerContext) -> Tuple[Tensor, Tensor]:
        """The map ``sum_c w_c * A_c`` and its terms' magnitude ``sum_c |w_c| * |A_c|`` (the
        weights are computed once: AblationCAM's cost forward passes)."""
        weights = self.channel_weights(ctx)
        return (torch.einsum('kc,chw->khw', weights, ctx.activation),
                torch.einsum('kc,chw->khw', weights.abs(), ctx.activation.abs()))


class GradCAM(ChannelWeightedMethod):
    """Grad-CAM: weights are the spatial mean of the gradients."""
    name = 'gradcam'

    def channel_weights(self, ctx: LayerContext) -> Tensor:
        return ctx.grads.mean(dim=(2, 3))


class GradCAMPlusPlus(ChannelWeightedMethod):
    """Grad-CAM++ (eq. 19 of arXiv:1710.11063, as in grad-cam)."""
    name = 'gradcam++'

    def channel_weights(self, ctx: LayerContext) -> Tensor:
        grads = ctx.grads
        grads_2 = grads.pow(2)
        sum_activations = ctx.activation.sum(dim=(1, 2))[None, :, None, None]
        aij = grads_2 / (2 * grads_2 + sum_activations * grads_2 * grads + 1e-6)
        aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
        return (grads.clamp(min=0) * aij).sum(dim=(2, 3))


class XGradCAM(ChannelWeightedMethod):
    """XGrad-CAM: gradients weighted by the normalised activations."""
    name = 'xgradcam'

    def channel_weights(self, ctx: LayerContext) -> Tensor:
        sum_activations = ctx.activation.sum(dim=(1, 2))[None, :, None, None]
        return (ctx.grads * ctx.activation[None] / (sum_activations + 1e-7)).sum(dim=(2, 3))


class LayerCAM(BoxCAMMethod):
    """LayerCAM: positive gradients weight every activation element."""
    name = 'layercam'

    def layer_map(self, ctx: LayerContext) -> Tensor:
        return (ctx.grads.clamp(min=0) * ctx.activation[None]).sum(dim=1)


class EigenGradCAM(BoxCAMMethod):
    """EigenGradCAM: first principal component of gradients x activations."""
    name = 'eigengradcam'

    def layer_map(self, ctx: LayerContext) -> Tensor:
        return first_component_projection(ctx.grads * ctx.activation[None])


class EigenCAM(BoxCAMMethod):
    """EigenCAM: first principal component of the activations. It does not depend on the box:
    every box gets the same map (``norm_in_bbox`` makes it box-specific)."""
    name = 'eigencam'
    uses_gradients = False

    def layer_map(self, ctx: LayerContext) -> Tensor:
        projection = first_component_projection(ctx.activation[None])[0]
        return projection.expand(ctx.num_boxes, *projection.shape)


class AblationCAM(ChannelWeightedMethod):
    """Ablation-CAM: a channel's weight is the relative drop of a box's score when the channel
    is set to ``ablation_value``: ``(s - s_ablated) / s`` (grad-cam's formula), computed from
    log scores as ``-expm1(log s_ablated - log s)`` so that confident boxes (s rounding to 1)
    keep their differences. A box that disappears weighs 1.

    One ablated forward serves all boxes of the image. Only the
    ``ceil(ratio_channels_to_ablate * C)`` channels with the most activation energy inside the
    boxes are ablated; the others keep weight 0, as grad-cam's skipped channels do.

    Args:
        batch_size (int): Ablated copies per forward. Defaults to 32.
        ratio_channels_to_ablate (float): Share of channels to ablate, in (0, 1].
            Defaults to 1.0.
        ablation_value (float): Value written into an ablated channel. Defaults to 0.0 (the
            paper's choice; grad-cam's ``min - 1e7`` for signed activations saturates a
            detection head).
    """
    name = 'ablationcam'
    uses_gradients = False
    needs_rescoring = True

    def __init__(self, batch_size: int = 32, ratio_channels_to_ablate: float = 1.0,
                 ablation_value: float = 0.0) -> None:
        self.batch_size = check_int('batch_size', batch_size, low=1)
        self.ratio_channels_to_ablate = check_number(
            'ratio_channels_to_ablate', ratio_channels_to_ablate, 0, 1, low_open=True)
        self.ablation_value = check_number('ablation_value', ablation_value)

    def channels_to_ablate(self, ctx: LayerContext) -> Tensor:
        num_channels = ctx.activation.shape[0]
        count = max(1, math.ceil(self.ratio_channels_to_ablate * num_channels))
        if count >= num_channels:
            return torch.arange(num_channels, device=ctx.activation.device)
        inside = ctx.box_mask.any(dim=0)
        if not inside.any():
            inside = torch.ones_like(inside)
        energy = ctx.activation.abs()[:, inside].sum(dim=1)
        return energy.topk(count).indices

    def channel_weights(self, ctx: LayerContext) -> Tensor:
        activation = ctx.activation
        channels = self.channels_to_ablate(ctx)
        weights = activation.new_zeros((ctx.num_boxes, activation.shape[0]))
        base = None
        for start in range(0, channels.numel(), self.batch_size):
            chunk = channels[start:start + self.batch_size]
            # Row 0 of the first batch is the unablated activation: the base score then comes
            # from the same computation as the ablated ones (no batch-size rounding noise).
            extra = 1 if base is None else 0
            batch = activation[None].repeat(chunk.numel() + extra, 1, 1, 1)
            batch[torch.arange(extra, chunk.numel() + extra), chunk] = self.ablation_value
            log_scores = ctx.rescore(batch)  # (n, K)
            if base is None:
                base, log_scores = log_scores[0], log_scores[1:]
                base = torch.where(torch.isfinite(base), base, ctx.base_log_scores)
            weights[:, chunk] = (-torch.expm1(log_scores.T - base[:, None])).to(weights.dtype)
        return weights


class InputMethod(BoxCAMMethod):
    """Base of input-level methods. Override :meth:`input_maps`."""
    uses_gradients = False
    works_on_input = True

    def input_maps(self, ctx: InputContext) -> Tensor:
        """``(K, H, W)`` raw map of each box on the network input."""
        raise NotImplementedError

    def input_map_and_magnitude(self, ctx: InputContext) -> Tuple[Tensor, Tensor]:
        """The raw maps and the magnitude of what was summed into them (``reliability.py``);
        this default is for maps that are sums of non-negative terms: the map itself."""
        maps = self.input_maps(ctx)
        return maps, maps.abs()

    def layer_map(self, ctx: LayerContext) -> Tensor:
        raise TypeError(f'{self.name} works on the input image, not on a layer')


class DRISE(InputMethod):
    """D-RISE (Petsiuk et al., CVPR 2021): random masks of the input, each weighted per box by
    how well the masked image's best prediction matches the box (IoU x class-score cosine x
    objectness); the map is the weighted sum of the masks (``drise.py`` has the details).

    One forward of ``batch_size`` masked copies serves every box of the image; memory grows
    with ``batch_size``, not ``num_masks``.

    Args:
        num_masks (int): Number of masks ``N``. Defaults to 1000.
        grid_size (int): Cells per side of the low-resolution grid ``s``. Defaults to 16.
        keep_prob (float): Probability ``p`` that a cell is kept, in (0, 1). Defaults to 0.5.
        batch_size (int): Masked images per forward. Defaults to 32.
        seed (int, optional): Seed of the masks' private generator (the same masks for every
            image and call); None draws a new seed from the OS each call. The global RNG is
            never used. Defaults to 0.
        normalize (str): ``'coverage'``: each pixel divided by how often it was kept
            (xaitk-saliency); ``'expected'``: by ``N * p`` (the paper). Defaults to 'coverage'.
        missing_objectness (str): Objectness factor for heads without objectness (YOLOv6/v8,
            RTMDet, PPYOLOE): ``'one'`` (the paper's 1) or ``'confidence'`` (the prediction's
            largest class score). Defaults to 'one'.
        similarity (str): ``'box'``: box IoU with every candidate of the masked image (the
            paper); ``'mask'``: instance-mask IoU with its final detections
            (instance-segmentation detectors). Defaults to 'box'.
        sampling (str): ``'balanced'``: every mask is drawn exactly as the paper's, but the
            masks come in balanced blocks (``drise.balanced_grids``): the same map in the
            limit, with less noise for a given ``num_masks``; ``'random'``: the paper's
            independent masks. Defaults to 'balanced'.
    """
    name = 'drise'

    def __init__(self, num_masks: int = 1000, grid_size: int = 16, keep_prob: float = 0.5,
                 batch_size: int = 32, seed: Optional[int] = 0, normalize: str = 'coverage',
                 missing_objectness: str = 'one', similarity: str = 'box',
                 sampling: str = 'balanced') -> None:
        check_drise_options(num_masks, grid_size, keep_prob, batch_size, seed)
        self.num_masks = int(num_masks)
        self.grid_size = int(grid_size)
        self.keep_prob = float(keep_prob)
        self.batch_size = int(batch_size)
        self.seed = seed
        self.normalize = check_choice('normalize', normalize, NORMALIZATIONS)
        self.missing_objectness = check_choice('missing_objectness', missing_objectness,
                                               MISSING_OBJECTNESS)
        self.similarity = check_choice('similarity', similarity, SIMILARITIES)
        self.sampling = check_choice('sampling', sampling, SAMPLINGS)

    def masks(self, size: Tuple[int, int], device='cpu') -> RiseMasks:
        """The masks this method uses for an input of ``size`` = (H, W)."""
        return RiseMasks(self.num_masks, self.grid_size, self.keep_prob, size, self.seed,
                         device, self.sampling)

    def input_maps(self, ctx: InputContext) -> Tensor:
        return drise_maps(ctx.image, ctx.boxes, ctx.predictions, ctx.predict,
                          self.masks(tuple(ctx.image.shape[-2:]), ctx.image.device),
                          self.batch_size, self.normalize, self.missing_objectness,
                          self.similarity, ctx.select)


METHODS: Dict[str, Type[BoxCAMMethod]] = {
    cls.name: cls
    for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, EigenGradCAM, EigenCAM,
                AblationCAM, DRISE)
}


def build_method(method, **options) -> BoxCAMMethod:
    """A method instance from its name (``'gradcam'``, ...) or an instance (returned as is).

    Args:
        method (str | BoxCAMMethod): Name or instance.
        **options: Passed to the method's constructor (AblationCAM: ``batch_size``,
            ``ratio_channels_to_ablate``, ``ablation_value``; DRISE: ``num_masks``,
            ``grid_size``, ``keep_prob``, ``batch_size``, ``seed``, ``normalize``,
            ``missing_objectness``); rejected by the others.
    """
    if isinstance(method, BoxCAMMethod):
        return method
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f'unknown CAM method {method!r}; choose one of {", ".join(METHODS)}')
    cls = METHODS[method.lower()]
    if options and cls not in (AblationCAM, DRISE):
        raise ValueError(f'{cls.name} takes no options, got {sorted(options)}')
    return cls(**options)

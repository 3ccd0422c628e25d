"""The feature-map engine shared by ``FeatMapVisHook`` and ``tools/featmap_vis.py``:
one forward with layer capture, then reduction, alignment and drawing per layer.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .align import map_to_original
from .layers import ActivationCapture
from .reduce import reduce_channels
from .render import draw_boxes, fit_size, make_grid, overlay, resize_image


@dataclass
class CapturedSample:
    """What one image's forward leaves for drawing.

    Attributes:
        maps (dict[str, Tensor]): Per output key (``layer`` or ``layer[i]``) a CHW map.
        meta (dict): The processed sample's metainfo (``ori_shape``, ``scale_factor``, ...).
        boxes, scores, labels (np.ndarray): Predictions in original-image pixels.
    """
    maps: Dict[str, torch.Tensor]
    meta: dict
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


def captured_from_output(maps: Dict[str, torch.Tensor], data_sample) -> CapturedSample:
    """Pairs captured maps with a ``DetDataSample`` returned by ``val_step``/``test_step``."""
    pred = getattr(data_sample, 'pred_instances', None)
    sample = CapturedSample(maps=dict(maps), meta=dict(data_sample.metainfo))
    if pred is not None and len(pred) > 0:
        sample.boxes = pred.bboxes.detach().float().cpu().numpy()
        sample.scores = pred.scores.detach().float().cpu().numpy()
        sample.labels = pred.labels.detach().cpu().numpy()
    return sample


def check_feature_maps(capture: ActivationCapture, owner: str) -> None:
    """After a forward: raises ValueError (prefixed with ``owner``) naming every target layer
    that gave nothing to draw (``ActivationCapture.missing_maps``) and what is accepted."""
    missing = capture.missing_maps()
    if not missing:
        return
    listed = '; '.join(f'{path!r} {why}' for path, why in missing.items())
    raise ValueError(
        f'{owner}: these target layers give no feature map to draw: {listed}. Accepted: layers '
        f'run by the network\'s forward whose output is a 4-D (N, C, H, W) tensor, or a '
        f'tuple/list of them (drawn as <layer>[i]), e.g. "backbone.stem", "neck", '
        f'"neck.out_layers[0]"; for a head, one of its conv layers. --preview-model '
        f'(tools/featmap_vis.py) lists every layer\'s output shapes.')


@torch.no_grad()
def forward_and_capture(model: nn.Module, data: dict, target_layers: Sequence[str],
                        owner: str = 'feature maps') -> List[CapturedSample]:
    """Runs ``model.test_step`` on a collated batch and captures ``target_layers``.

    The caller owns the model's mode (use ``engine.model_state.preserved_model_state``).

    Raises:
        ValueError: A target layer did not run or gave no 4-D map (message from ``owner``).
    """
    with ActivationCapture(model, target_layers) as capture:
        outputs = model.test_step(data)
    check_feature_maps(capture, owner)
    return [captured_from_output(capture.maps(i), out) for i, out in enumerate(outputs)]


def activation_stats(featmaps: Sequence[torch.Tensor], dead_eps: float = 1e-6,
                     max_values: int = 100_000) -> dict:
    """Statistics of one layer over several images (each CHW, same C).

    Returns:
        dict: ``mean``, ``std``, ``dead_ratio`` (share of channels whose activation never
        exceeds ``dead_eps`` on any pixel of any image), ``values`` (a float32 sample of the
        activations for a histogram, at most ``max_values``).
    """
    stacked = torch.stack([f.float() for f in featmaps])  # N, C, H, W
    finite = stacked[torch.isfinite(stacked)]
    if finite.numel() == 0:
        raise ValueError('no finite activations')
    channel_max = torch.nan_to_num(stacked, nan=-math.inf).amax(dim=(0, 2, 3))
    values = finite.flatten()
    if values.numel() > max_values:
        step = math.ceil(values.numel() / max_values)
        values = values[::step]
    return dict(mean=float(finite.mean()), std=float(finite.std(unbiased=False)),
                dead_ratio=float((channel_max <= dead_eps).float().mean()),
                values=values.numpy())


def render_layer(image: np.ndarray, featmap: torch.Tensor, sample: CapturedSample,
                 channel_reduction: Optional[str], topk: int, arrangement: Tuple[int, int],
                 alpha: float, align: bool = True, score_thr: Optional[float] = 0.3,
                 class_names: Sequence[str] = ()) -> np.ndarray:
    """Draws one layer's map(s) over ``image`` (already sized for display).

    Args:
        image (np.ndarray): RGB original image, possibly scaled down for display.
        featmap (Tensor): The layer's CHW map over the network input.
        sample (CapturedSample): Metadata and predictions of the image.
        channel_reduction, topk, arrangement: See ``engine.reduce``.
        alpha (float): Heat opacity.
        align (bool): Trace the letterbox/resize geometry back (True) or stretch the map over
            the image (False, what naive tools do). Defaults to True.
        score_thr (float, optional): Draw predicted boxes above this score; None draws none.
        class_names (Sequence[str]): Names for box captions.

    Returns:
        np.ndarray: RGB image; a grid of ``arrangement`` when several channels are shown.

    Raises:
        ValueError: The map has no pixels.
    """
    if featmap.dim() != 3 or featmap.shape[-1] == 0 or featmap.shape[-2] == 0:
        raise ValueError(f'empty feature map of shape {tuple(featmap.shape)}')
    height, width = image.shape[:2]
    ori_h, ori_w = (int(v) for v in tuple(sample.meta['ori_shape'])[:2])
    tiles, titles = [], []
    for label, reduced in reduce_channels(featmap, channel_reduction, topk):
        if align:
            heat = map_to_original(reduced, sample.meta, out_size=(height, width))
        else:
            heat = torch.nn.functional.interpolate(
                (reduced if reduced.dim() == 3 else reduced[None])[None].float(),
                size=(height, width), mode='bilinear', align_corners=False)[0]
            heat = heat[0] if reduced.dim() == 2 else heat
        tile = overlay(image, heat, alpha)
        if score_thr is not None and len(sample.scores):
            keep = sample.scores >= score_thr
            scale = np.array([width / ori_w, height / ori_h] * 2, np.float32)
            tile = draw_boxes(tile, sample.boxes[keep] * scale, sample.labels[keep],
                              sample.scores[keep], class_names)
        tiles.append(tile)
        titles.append(label)
    if len(tiles) == 1:
        return tiles[0]
    return make_grid(tiles, titles, ncols=arrangement[1])


def display_image(image: np.ndarray, max_size: Optional[int]) -> np.ndarray:
    """The original image scaled so its long side is at most ``max_size``."""
    return resize_image(image, fit_size(image.shape[0], image.shape[1], max_size))

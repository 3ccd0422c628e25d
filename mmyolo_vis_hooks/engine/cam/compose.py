"""From raw per-layer maps to per-box heat maps on the image, as grad-cam composes them.

grad-cam, per target layer: ReLU, min-max normalise, resize to the input; then the mean over
layers, normalised again. Here the resize is the letterbox-aware sampling of
``engine.core.geometry`` straight onto the original image (one bilinear sampling per layer), or
a plain resize onto the network input when no metadata is given.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..core.geometry import map_to_original, points_in_boxes

EPS = 1e-7


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalises each ``(h, w)`` map of ``(..., h, w)`` to [0, 1]; a flat map becomes 0.

    grad-cam's ``scale_cam_image`` divides by ``max - min + 1e-7``, an absolute epsilon that
    flattens any map whose range is below ~1e-7 (gradients of confident boxes are that small).
    The epsilon here is relative to the map's own magnitude, so only the scale is removed.
    """
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    flat = flat - low
    span = flat.amax(dim=-1, keepdim=True)
    scale = torch.maximum(span, low.abs())
    ok = span > EPS * scale
    flat = torch.where(ok, flat / torch.where(ok, span, torch.ones_like(span)),
                       torch.zeros_like(flat))
    return flat.reshape(maps.shape)


def compose_box_maps(layer_maps: Sequence[Tensor], meta: Optional[Dict] = None,
                     input_size: Optional[Tuple[int, int]] = None,
                     out_size: Optional[Tuple[int, int]] = None) -> Tensor:
    """Per-box maps on the image from per-layer raw maps.

    Args:
        layer_maps (Sequence[Tensor]): One ``(K, h_l, w_l)`` raw map stack per layer output.
        meta (dict, optional): Sample metainfo; the maps are sampled onto the original image
            through its letterbox / resize geometry (``engine.core.geometry.map_to_original``).
        input_size (tuple[int, int], optional): ``(H, W)`` of the network input; used when
            ``meta`` is None (the maps are then resized onto the input).
        out_size (tuple[int, int], optional): Output ``(h, w)``, e.g. a reduced size; defaults
            to the original image (or the input when ``meta`` is None).

    Returns:
        Tensor: ``(K, H, W)`` float maps in [0, 1].
    """
    if not layer_maps:
        raise ValueError('no layer maps to compose')
    if meta is None:
        if input_size is None:
            raise ValueError('compose_box_maps needs meta or input_size')
        h, w = input_size
        meta = dict(ori_shape=(h, w), img_shape=(h, w), scale_factor=(1.0, 1.0))
    composed = None
    for raw in layer_maps:
        layer = normalize_maps(raw.float().clamp(min=0))
        sampled = map_to_original(layer, meta, out_size)
        composed = sampled if composed is None else composed + sampled
    return normalize_maps(composed / len(layer_maps))


def box_masks(boxes: Tensor, size: Tuple[int, int], scale: Tuple[float, float] = (1.0, 1.0)
              ) -> Tensor:
    """``(K, h, w)`` bool masks of the cells whose centres lie inside each box (xyxy, or
    rotated: the rotated rectangle).

    ``scale`` = (x, y) pixels per cell; boxes are in pixels.
    """
    h, w = size
    device = boxes.device
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * scale[0]
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * scale[1]
    return points_in_boxes(xs, ys, boxes)


def norm_in_bbox(maps: Tensor, boxes: Tensor) -> Tensor:
    """MMYOLO's ``norm_in_bbox``: each map normalised to [0, 1] inside its own box
    and zero outside. A box smaller than one pixel keeps no heat.

    Args:
        maps (Tensor): ``(K, H, W)`` maps on the image the ``boxes`` are given in.
        boxes (Tensor): ``(K, 4)`` xyxy (or ``(K, 5)`` rotated) boxes in pixels of that image.
    """
    masks = box_masks(boxes, maps.shape[-2:])
    out = torch.zeros_like(maps)
    for k in range(maps.shape[0]):
        if masks[k].any():
            values = maps[k][masks[k]]
            low, high = values.min(), values.max()
            out[k][masks[k]] = (values - low) / (high - low + EPS)
    return out


def norm_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Each map normalised to [0, 1] inside its own instance mask and zero outside (the
    mask counterpart of :func:`norm_in_bbox`). An empty mask keeps no heat.

    Args:
        maps (Tensor): ``(K, H, W)`` maps.
        masks (Tensor): ``(K, H, W)`` bool masks on the same pixels.
    """
    out = torch.zeros_like(maps)
    for k in range(maps.shape[0]):
        inside = masks[k].bool()
        if inside.any():
            values = maps[k][inside]
            low, high = values.min(), values.max()
            out[k][inside] = (values - low) / (high - low + EPS)
    return out


def merge_box_maps(maps: Tensor) -> Tensor:
    """One image-level ``(H, W)`` map: the maximum over boxes, normalised (MMYOLO's merge of
    ``norm_in_bbox`` maps). An image without boxes gives a zero map."""
    if maps.shape[0] == 0:
        return maps.new_zeros(maps.shape[-2:])
    return normalize_maps(maps.amax(dim=0))


def energy_inside(heat: Tensor, boxes: Tensor, masks: Optional[Tensor] = None
                  ) -> Optional[float]:
    """Energy-based pointing game: the share of the map's total inside the union of ``boxes``,
    or of the ``(G, H, W)`` region ``masks`` (ground-truth instance masks on the map's pixels)
    when given.

    Returns None for a map with no energy (nothing to point with).
    """
    total = float(heat.clamp(min=0).sum())
    if total <= 0:
        return None
    if masks is not None:
        if masks.shape[0] == 0:
            return 0.0
        inside = masks.bool().reshape(-1, *heat.shape[-2:]).any(dim=0)
    elif boxes.numel() == 0:
        return 0.0
    else:
        inside = box_masks(boxes.reshape(-1, boxes.shape[-1]), heat.shape[-2:]).any(dim=0)
    return float(heat.clamp(min=0)[inside].sum()) / total


__all__ = ['normalize_maps', 'compose_box_maps', 'box_masks', 'norm_in_bbox', 'norm_in_mask',
           'merge_box_maps', 'energy_inside']

"""Mapping feature maps from the network input back onto the original image.

MMYOLO's test pipelines letterbox: keep-ratio resize, then pad (``LetterResize``) to a per-batch
shape. A map stretched over the whole input therefore lands shifted on the original image. Here
each original pixel is traced through the sample's own metadata (``scale_factor``, ``pad_param``,
``batch_input_shape``) to its spot in the feature map and sampled there: one bilinear sampling,
no intermediate upsampled copy.

The alternative, ``resize_only_pipeline``, replaces the letterbox steps of a pipeline with a
plain resize, so input and image share their aspect and only a scale remains to undo.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

ALIGN_MODES = ('letterbox', 'resize')

# Test-time steps that keep the aspect ratio and/or pad; swapped for one resize-only step.
LETTERBOX_TRANSFORMS = ('YOLOv5KeepRatioResize', 'LetterResize', 'mmdet.Pad', 'Pad',
                        'mmdet.FixShapeResize', 'FixShapeResize', 'PPYOLOERandomCrop')
KEEP_RATIO_RESIZES = ('mmdet.Resize', 'Resize')


def check_align(align: str) -> str:
    if align not in ALIGN_MODES:
        raise ValueError(f'align must be one of {ALIGN_MODES}, got {align!r}')
    return align


def _pair(value, name: str) -> Tuple[float, float]:
    if value is None:
        raise ValueError(f'sample metadata lacks {name!r}, which alignment needs')
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    return float(arr[0]), float(arr[1])


def input_geometry(meta: Dict) -> Dict[str, float]:
    """Where the original image lies in the network input, from a data sample's metainfo.

    Returns:
        dict: ``scale_x``, ``scale_y`` (input pixels per original pixel), ``left``, ``top``
        (padding before the content), ``in_h``, ``in_w`` (network input size) and
        ``ori_h``, ``ori_w``.
    """
    ori_h, ori_w = (int(v) for v in tuple(meta['ori_shape'])[:2])
    in_shape = meta.get('batch_input_shape') or meta.get('img_shape')
    in_h, in_w = (int(v) for v in tuple(in_shape)[:2])
    scale_x, scale_y = _pair(meta.get('scale_factor', (1.0, 1.0)), 'scale_factor')
    pad = meta.get('pad_param')
    top = left = 0.0
    if pad is not None:
        pad = np.asarray(pad, dtype=np.float64).reshape(-1)
        top, left = float(pad[0]), float(pad[2])
    return dict(scale_x=scale_x, scale_y=scale_y, left=left, top=top, in_h=in_h, in_w=in_w,
                ori_h=ori_h, ori_w=ori_w)


def map_to_original(featmap: torch.Tensor, meta: Dict,
                    out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Samples a map of the network input onto the original image (letterbox inverted).

    Args:
        featmap (Tensor): ``(C, h, w)`` or ``(h, w)`` map covering the whole network input
            (any stride).
        meta (dict): The sample's metainfo (``ori_shape``, ``scale_factor``,
            ``batch_input_shape`` or ``img_shape``, optional ``pad_param``).
        out_size (tuple[int, int], optional): ``(h, w)`` of the output; the original image
            size when None. A smaller size samples the same geometry at lower resolution.

    Returns:
        Tensor: float map of shape ``(C, H, W)`` (or ``(H, W)``) aligned with the image.
    """
    geo = input_geometry(meta)
    squeeze = featmap.dim() == 2
    maps = featmap[None] if squeeze else featmap
    out_h, out_w = out_size or (geo['ori_h'], geo['ori_w'])
    # Centre of each output pixel -> original pixel coords -> input pixel coords -> [-1, 1].
    xs = (torch.arange(out_w, dtype=torch.float64) + 0.5) * (geo['ori_w'] / out_w)
    ys = (torch.arange(out_h, dtype=torch.float64) + 0.5) * (geo['ori_h'] / out_h)
    u = 2 * (xs * geo['scale_x'] + geo['left']) / geo['in_w'] - 1
    v = 2 * (ys * geo['scale_y'] + geo['top']) / geo['in_h'] - 1
    grid = torch.stack(torch.meshgrid(v, u, indexing='ij')[::-1], dim=-1)
    sampled = F.grid_sample(
        maps[None].float(), grid[None].to(maps.device, torch.float32), mode='bilinear',
        padding_mode='border', align_corners=False)[0]
    return sampled[0] if squeeze else sampled


def stretch_to_original(featmap: torch.Tensor, meta: Dict) -> torch.Tensor:
    """What the naive tools do: stretch the whole map (padding included) over the image."""
    ori_h, ori_w = (int(v) for v in tuple(meta['ori_shape'])[:2])
    squeeze = featmap.dim() == 2
    maps = featmap[None] if squeeze else featmap
    out = F.interpolate(maps[None].float(), size=(ori_h, ori_w), mode='bilinear',
                        align_corners=False)[0]
    return out[0] if squeeze else out


def boxes_to_original(boxes: torch.Tensor, meta: Dict) -> torch.Tensor:
    """``(N, 4)`` xyxy boxes in network-input pixels -> original-image pixels."""
    geo = input_geometry(meta)
    offset = boxes.new_tensor([geo['left'], geo['top'], geo['left'], geo['top']])
    scale = boxes.new_tensor([geo['scale_x'], geo['scale_y'], geo['scale_x'], geo['scale_y']])
    out = (boxes - offset) / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, geo['ori_w'])
    out[:, 1::2] = out[:, 1::2].clamp(0, geo['ori_h'])
    return out


def _transform_type(step: Dict) -> str:
    return str(step.get('type', ''))


def _scale_of(pipeline: Sequence[Dict]) -> Optional[Tuple[int, int]]:
    for step in pipeline:
        if _transform_type(step) in LETTERBOX_TRANSFORMS + KEEP_RATIO_RESIZES and 'scale' in step:
            scale = step['scale']
            return (scale, scale) if isinstance(scale, int) else tuple(scale)
    return None


def resize_only_pipeline(pipeline: Sequence[Dict],
                         scale: Optional[Tuple[int, int]] = None) -> List[Dict]:
    """A copy of a test pipeline with its letterbox steps replaced by one plain resize.

    The first letterbox step becomes ``mmdet.Resize(scale, keep_ratio=False)``; the others are
    dropped. ``scale_factor`` is then per axis and there is no padding, so maps need only be
    rescaled. The given pipeline is not modified.

    Args:
        pipeline (list[dict]): Transform configs (e.g. ``cfg.val_dataloader.dataset.pipeline``).
        scale (tuple[int, int], optional): ``(w, h)`` of the network input. Taken from the
            letterbox steps when None.

    Raises:
        ValueError: No scale is given and none can be read from the pipeline, or the pipeline
            does not load images.
    """
    scale = scale or _scale_of(pipeline)
    if scale is None:
        raise ValueError('cannot find the input scale in the pipeline; pass scale=(w, h)')
    out: List[Dict] = []
    replaced = False
    for step in pipeline:
        kind = _transform_type(step)
        if kind in LETTERBOX_TRANSFORMS or (kind in KEEP_RATIO_RESIZES and step.get('keep_ratio')):
            if not replaced:
                out.append(dict(type='mmdet.Resize', scale=tuple(scale), keep_ratio=False))
                replaced = True
            continue
        step = copy.deepcopy(step)
        if kind.endswith('PackDetInputs'):
            keys = tuple(k for k in step.get('meta_keys', ()) if k != 'pad_param')
            step['meta_keys'] = keys + tuple(k for k in ('scale_factor',) if k not in keys)
        out.append(step)
    if not any('LoadImage' in _transform_type(s) for s in out):
        raise ValueError('the pipeline has no image loading step (e.g. LoadImageFromFile)')
    if not replaced:
        out.insert(1, dict(type='mmdet.Resize', scale=tuple(scale), keep_ratio=False))
    return out

"""Geometry shared by every engine: where the original image lies in the network input, maps
and boxes carried back onto the original image, and box overlaps.

MMYOLO's test pipelines letterbox: keep-ratio resize, then pad (``LetterResize``) to a per-batch
shape. A map stretched over the whole input therefore lands shifted on the original image. Here
each original pixel is traced through the sample's own metadata (``scale_factor``, ``pad_param``,
``batch_input_shape``) to its spot in the feature map and sampled there: one bilinear sampling,
no intermediate upsampled copy. (The other way, ``engine.core.pipeline.resize_only_pipeline``,
replaces the letterbox steps with a plain resize, so only a scale remains to undo.)

Boxes are ``(..., 4)`` xyxy, or ``(..., 5)`` rotated ``(cx, cy, w, h, angle)`` in mmrotate's
convention (``RotatedBoxes``: angle in radians; rotated detectors need mmrotate, whose box
structure and overlaps these functions then use). Every function here takes both.

MMDetection's test pipelines resize keeping the ratio (``scale_factor`` is the exact per-axis
ratio of the resized to the original size) and its data preprocessor pads at the bottom/right
to the batch's largest image and to ``pad_size_divisor`` (``batch_input_shape``): the same
tracing inverts them, with no ``pad_param``.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def original_size(meta: Dict) -> Tuple[int, int]:
    """``(h, w)`` of the original image from a sample's metainfo (``ori_shape`` may hold
    channels)."""
    if 'ori_shape' not in meta:
        raise ValueError('sample metadata lacks ori_shape, which alignment needs')
    ori_h, ori_w = (int(v) for v in tuple(meta['ori_shape'])[:2])
    return ori_h, ori_w


def is_rotated(boxes) -> bool:
    """Whether ``boxes`` are rotated ``(..., 5)`` boxes rather than ``(..., 4)`` xyxy ones."""
    return tuple(np.shape(boxes))[-1:] == (5, )


def _rotated_boxes(boxes: torch.Tensor):
    from mmrotate.structures.bbox import RotatedBoxes
    return RotatedBoxes(boxes.reshape(-1, 5))


def rotated_box_iou(boxes: torch.Tensor, refs: torch.Tensor, metric: str = 'iou'
                    ) -> torch.Tensor:
    """:func:`box_iou` of rotated boxes: ``(..., N, 5)`` with ``(K, 5)`` gives ``(..., N, K)``,
    mmrotate's ``rbbox_overlaps`` (mmcv's ``box_iou_rotated``) on the pairs whose
    circumscribed circles meet (the others cannot overlap: D-RISE's ``(n, P, K)`` overlaps
    then cost a fraction of all pairs). Not differentiable."""
    from mmrotate.structures.bbox import rbbox_overlaps
    lead = boxes.shape[:-1]
    flat = boxes.detach().reshape(-1, 5).float()
    refs = refs.detach().reshape(-1, 5).float().to(flat.device)
    out = flat.new_zeros((flat.shape[0], refs.shape[0]))
    if out.numel():
        radius = flat[:, 2:4].norm(dim=-1) / 2
        ref_radius = refs[:, 2:4].norm(dim=-1) / 2
        near = torch.cdist(flat[:, :2], refs[:, :2]) < radius[:, None] + ref_radius[None]
        rows, cols = near.nonzero(as_tuple=True)
        if rows.numel():
            iou = rbbox_overlaps(flat[rows], refs[cols], mode='iou', is_aligned=True)
            iou = iou.reshape(-1)
            if metric == 'ios':  # intersection from the IoU, over the smaller area
                area = flat[rows, 2] * flat[rows, 3]
                ref_area = refs[cols, 2] * refs[cols, 3]
                inter = iou * (area + ref_area) / (1 + iou)
                smaller = torch.minimum(area, ref_area)
                iou = torch.where(smaller > 0, inter / smaller.clamp(min=1e-12),
                                  torch.zeros_like(inter))
            out[rows, cols] = iou.to(out.dtype)
    return out.reshape(*lead, refs.shape[0])


def box_iou(boxes, refs, metric: str = 'iou'):
    """Pairwise overlap of boxes: ``(..., N, 4)`` with ``(K, 4)`` gives ``(..., N, K)``
    (rotated ``(..., N, 5)`` boxes: :func:`rotated_box_iou`).

    Args:
        boxes, refs (Tensor | np.ndarray | list): The boxes. Torch tensors stay tensors
            (differentiable, any device); anything else is computed in float64 and returned
            as numpy.
        metric (str): ``'iou'`` (intersection over union) or ``'ios'`` (intersection over the
            smaller box, sahi's IOS). Defaults to 'iou'.

    Empty or degenerate pairs give 0.
    """
    if metric not in ('iou', 'ios'):
        raise ValueError(f"metric must be 'iou' or 'ios', got {metric!r}")
    as_numpy = not isinstance(boxes, torch.Tensor)
    if is_rotated(boxes):
        if as_numpy:
            return rotated_box_iou(torch.as_tensor(np.asarray(boxes, np.float32)),
                                   torch.as_tensor(np.asarray(refs, np.float32)),
                                   metric).double().numpy()
        return rotated_box_iou(boxes, refs, metric)
    if as_numpy:
        boxes = torch.as_tensor(np.asarray(boxes, np.float64).reshape(-1, 4))
        refs = torch.as_tensor(np.asarray(refs, np.float64).reshape(-1, 4))
    # Per side, not on (..., N, K, 2) stacks: half the time on D-RISE's (n, P, K) overlaps.
    x1, y1, x2, y2 = (side[..., None] for side in boxes.unbind(-1))
    ref_x1, ref_y1, ref_x2, ref_y2 = refs.unbind(-1)
    inter = ((torch.minimum(x2, ref_x2) - torch.maximum(x1, ref_x1)).clamp(min=0)
             * (torch.minimum(y2, ref_y2) - torch.maximum(y1, ref_y1)).clamp(min=0))
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_refs = (ref_x2 - ref_x1).clamp(min=0) * (ref_y2 - ref_y1).clamp(min=0)
    denom = area + area_refs - inter if metric == 'iou' else torch.minimum(area, area_refs)
    overlap = torch.where(denom > 0, inter / denom.clamp(min=1e-12), torch.zeros_like(inter))
    return overlap.numpy() if as_numpy else overlap


def same_label_iou(boxes, labels, refs, ref_labels) -> np.ndarray:
    """:func:`box_iou` of every box with every reference (numpy, ``(N, K)``), and -1 where
    their labels differ, so that no IoU threshold (>= 0) matches across classes. The one
    class-aware overlap of the package's ground-truth and run-to-run matchings."""
    iou = box_iou(boxes, refs)
    same = np.asarray(labels).reshape(-1, 1) == np.asarray(ref_labels).reshape(1, -1)
    return np.where(same, iou, -1.0)

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
    ori_h, ori_w = original_size(meta)
    in_shape = meta.get('batch_input_shape') or meta.get('img_shape')
    in_h, in_w = (int(v) for v in tuple(in_shape)[:2])
    scale_x, scale_y = _pair(meta.get('scale_factor', (1.0, 1.0)), 'scale_factor')
    pad = meta.get('pad_param')
    top = left = 0.0
    if pad is not None:
        pad = np.asarray(pad, dtype=np.float64).reshape(-1)
        top, left = float(pad[0]), float(pad[2])
    border = meta.get('border')  # mmdet's RandomCenterCropPad (CenterNet's test pipeline)
    if border is not None:  # (top, bottom, left, right) of the image in its canvas
        border = np.asarray(border, dtype=np.float64).reshape(-1)
        top, left = top + float(border[0]), left + float(border[2])
    return dict(scale_x=scale_x, scale_y=scale_y, left=left, top=top, in_h=in_h, in_w=in_w,
                ori_h=ori_h, ori_w=ori_w)


def _inside_content(coords: torch.Tensor, extent: float) -> torch.Tensor:
    """Input-pixel coordinates clamped to the centres of the content's first and last pixels
    (``extent`` pixels of content; unchanged when it is under one pixel)."""
    return coords.clamp(0.5, extent - 0.5) if extent >= 1 else coords


def map_to_original(featmap: torch.Tensor, meta: Dict,
                    out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Samples a map of the network input onto the original image (letterbox inverted).

    The input may be padded before the content (``pad_param``: MMYOLO's centred letterbox)
    and after it (bottom/right: ``mmdet.Pad`` and the data preprocessor's batch padding to
    the largest image and to ``pad_size_divisor``, read from ``batch_input_shape``).
    Sampling points never leave the content: where an original pixel's centre lies within
    half an input pixel of the content's edge (the outer ring of a downscaled image) the
    content's edge pixel is read, as the resize itself replicates the edge (OpenCV's
    bilinear rule), instead of blending in the padding.

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
    # Centre of each output pixel -> original pixel coords -> input pixel coords (inside the
    # content) -> [-1, 1].
    xs = (torch.arange(out_w, dtype=torch.float64) + 0.5) * (geo['ori_w'] / out_w)
    ys = (torch.arange(out_h, dtype=torch.float64) + 0.5) * (geo['ori_h'] / out_h)
    x_in = _inside_content(xs * geo['scale_x'], geo['ori_w'] * geo['scale_x']) + geo['left']
    y_in = _inside_content(ys * geo['scale_y'], geo['ori_h'] * geo['scale_y']) + geo['top']
    u = 2 * x_in / geo['in_w'] - 1
    v = 2 * y_in / geo['in_h'] - 1
    grid = torch.stack(torch.meshgrid(v, u, indexing='ij')[::-1], dim=-1)
    sampled = F.grid_sample(
        maps[None].float(), grid[None].to(maps.device, torch.float32), mode='bilinear',
        padding_mode='border', align_corners=False)[0]
    return sampled[0] if squeeze else sampled


def stretch_to_original(featmap: torch.Tensor, meta: Dict) -> torch.Tensor:
    """What the naive tools do: stretch the whole map (padding included) over the image."""
    ori_h, ori_w = original_size(meta)
    squeeze = featmap.dim() == 2
    maps = featmap[None] if squeeze else featmap
    out = F.interpolate(maps[None].float(), size=(ori_h, ori_w), mode='bilinear',
                        align_corners=False)[0]
    return out[0] if squeeze else out


def quads_to_rotated(quads) -> np.ndarray:
    """``(N, 8)`` quadrilaterals (DOTA's ground truth: 4 corners) -> ``(N, 5)`` rotated boxes,
    as mmrotate's ``qbox2rbox`` (its datasets' ``qbox`` -> ``rbox`` conversion) gives them."""
    from mmrotate.structures.bbox import qbox2rbox
    quads = torch.as_tensor(np.asarray(quads, np.float32).reshape(-1, 8))
    return qbox2rbox(quads).numpy().reshape(-1, 5)


def box_sizes(boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(widths, heights)`` of ``(N, 4)`` xyxy boxes, or of rotated boxes along their own
    sides (mmrotate's ``RotatedBoxes.widths``/``heights``)."""
    if is_rotated(boxes):
        return boxes[..., 2], boxes[..., 3]
    return boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]


def scale_boxes(boxes: torch.Tensor, scale_x: float, scale_y: float) -> torch.Tensor:
    """Boxes in pixels of an image scaled by ``(scale_x, scale_y)``: xyxy coordinates times
    the scale; rotated boxes through mmrotate's ``RotatedBoxes.rescale_`` (a rotated box
    under unequal scales becomes the rotated box mmrotate defines)."""
    if is_rotated(boxes):
        if scale_x == scale_y == 1:
            return boxes.clone()
        rotated = _rotated_boxes(boxes.float())
        rotated.rescale_((scale_x, scale_y))
        return rotated.tensor.reshape(boxes.shape)
    return boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])


def box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, 4, 2)`` corner points of boxes: a rotated box's four corners in mmrotate's
    order, an xyxy box's clockwise from its top left."""
    if is_rotated(boxes):
        from mmrotate.structures.bbox import RotatedBoxes
        return RotatedBoxes.rbox2corner(boxes.reshape(-1, 5).float())
    x1, y1, x2, y2 = boxes.reshape(-1, 4).float().unbind(-1)
    return torch.stack([torch.stack(corner, dim=-1) for corner in
                        ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], dim=1)


def points_in_boxes(xs: torch.Tensor, ys: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``(K, len(ys), len(xs))`` bool: which grid points ``(xs[j], ys[i])`` lie inside each
    box (on its edge counts as inside)."""
    boxes = boxes.float()
    if is_rotated(boxes):  # the point in the box's own frame, as RotatedBoxes.is_inside
        boxes = boxes.reshape(-1, 5)
        dx = xs[None, None, :] - boxes[:, 0, None, None]
        dy = ys[None, :, None] - boxes[:, 1, None, None]
        cos, sin = boxes[:, 4].cos()[:, None, None], boxes[:, 4].sin()[:, None, None]
        along_w = dx * cos + dy * sin
        along_h = -dx * sin + dy * cos
        return (along_w.abs() <= boxes[:, 2, None, None] / 2) & \
            (along_h.abs() <= boxes[:, 3, None, None] / 2)
    boxes = boxes.reshape(-1, 4)
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])
    return inside_y[:, :, None] & inside_x[:, None, :]


def boxes_to_original(boxes: torch.Tensor, meta: Dict) -> torch.Tensor:
    """``(N, 4)`` xyxy boxes in network-input pixels -> original-image pixels, clipped to
    the image; rotated ``(N, 5)`` boxes are moved and rescaled as mmrotate's
    ``RotatedBoxes`` does (MMYOLO's rotated head does not clip them either)."""
    geo = input_geometry(meta)
    if is_rotated(boxes):
        rotated = _rotated_boxes(boxes.float())
        rotated.translate_((-geo['left'], -geo['top']))
        rotated.rescale_((1 / geo['scale_x'], 1 / geo['scale_y']))
        return rotated.tensor.reshape(boxes.shape)
    out = points_to_original(boxes.reshape(-1, 2, 2), meta, geo).reshape(boxes.shape)
    out[:, 0::2] = out[:, 0::2].clamp(0, geo['ori_w'])
    out[:, 1::2] = out[:, 1::2].clamp(0, geo['ori_h'])
    return out


def segmentation_masks(segmentations: Sequence, height: int, width: int
                       ) -> Optional[np.ndarray]:
    """``(G, height, width)`` bool masks of COCO-style segmentations (polygon lists,
    uncompressed or compressed RLE), decoded with pycocotools; None when any of them is
    missing or empty (the ground truth then has boxes only)."""
    if any(not seg for seg in segmentations):
        return None
    if not len(segmentations):
        return np.zeros((0, height, width), dtype=bool)
    from pycocotools import mask as mask_utils
    masks = []
    for seg in segmentations:
        if isinstance(seg, dict) and isinstance(seg.get('counts'), list):
            rle = mask_utils.frPyObjects(seg, height, width)  # uncompressed RLE
        elif isinstance(seg, dict):
            rle = seg
        else:
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        masks.append(mask_utils.decode(rle).astype(bool))
    return np.stack(masks)


def points_to_original(points: torch.Tensor, meta: Dict,
                       geo: Optional[Dict[str, float]] = None) -> torch.Tensor:
    """``(..., 2)`` xy points in network-input pixels -> original-image pixels (not clamped:
    a keypoint may lie outside the image); ``geo``: ``input_geometry(meta)`` when known."""
    geo = geo or input_geometry(meta)
    offset = points.new_tensor([geo['left'], geo['top']])
    scale = points.new_tensor([geo['scale_x'], geo['scale_y']])
    return (points - offset) / scale

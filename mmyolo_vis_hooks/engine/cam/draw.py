"""Drawing box CAMs: what ``tools/boxam_vis.py`` and ``BoxAMVisHook`` both show."""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.draw import draw_boxes, draw_keypoints, draw_mask_outlines, make_grid, overlay
from ..core.geometry import (boxes_to_original, is_rotated, map_to_original, original_size,
                             points_to_original, scale_boxes)
from . import compose
from .compose import energy_inside, merge_box_maps
from .engine import BoxCAMResult


def masks_on_image(result: BoxCAMResult, meta: Dict, size: Tuple[int, int]
                   ) -> Optional[torch.Tensor]:
    """The detections' instance masks on the original image shown at ``size`` = (h, w):
    ``(K, h, w)`` bool (the network-input masks sampled through the letterbox / resize
    geometry, as the maps are, and cut at one half); None for detections without masks."""
    masks = result.detections.masks
    if masks is None:
        return None
    if len(masks) == 0:
        return torch.zeros((0, *size), dtype=torch.bool)
    return map_to_original(masks.detach().cpu().float(), meta, size) > 0.5


def keypoints_on_image(result: BoxCAMResult, meta: Dict, size: Tuple[int, int]
                       ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The detections' keypoints on the original image shown at ``size`` = (h, w): ``(K, J,
    2)`` xy in pixels of that display (mapped as the boxes are) and their ``(K, J)``
    visibility scores; None for detections without keypoints."""
    det = result.detections
    if det.keypoints is None:
        return None
    ori_h, ori_w = original_size(meta)
    points = points_to_original(det.keypoints.detach().float().cpu(), meta)
    points = points * torch.tensor([size[1] / ori_w, size[0] / ori_h])
    return points.numpy(), det.keypoint_scores.detach().float().cpu().numpy()


def maps_on_image(result: BoxCAMResult, meta: Dict, size: Tuple[int, int],
                  norm_in_bbox: bool = False, norm_in_mask: bool = False
                  ) -> Tuple[torch.Tensor, np.ndarray]:
    """Per-box maps and boxes on the original image shown at ``size`` = (h, w).

    Returns:
        tuple: ``(K, h, w)`` maps in [0, 1] (normalised inside each box and zero outside with
        ``norm_in_bbox``, inside each instance mask with ``norm_in_mask``) and the ``(K, 4)``
        (rotated: ``(K, 5)``) boxes in pixels of that display.

    Raises:
        ValueError: ``norm_in_mask`` for detections without masks.
    """
    ori_h, ori_w = original_size(meta)
    maps = result.box_maps(meta, out_size=size).cpu()
    boxes = boxes_to_original(result.detections.boxes.detach().float().cpu(), meta)
    boxes = scale_boxes(boxes, size[1] / ori_w, size[0] / ori_h)
    if norm_in_mask:
        masks = masks_on_image(result, meta, size)
        if masks is None:
            raise ValueError('norm_in_mask needs instance masks; this detector predicts '
                             'boxes only (use norm_in_bbox)')
        if len(result):
            maps = compose.norm_in_mask(maps, masks)
    elif norm_in_bbox and len(result):
        maps = compose.norm_in_bbox(maps, boxes)
    return maps, boxes.numpy()


def draw_box_cams(image: np.ndarray, result: BoxCAMResult, meta: Dict,
                  class_names: Sequence[str] = (), norm_in_bbox: bool = False,
                  merge: bool = False, alpha: float = 0.5,
                  ncols: Optional[int] = None, norm_in_mask: bool = False,
                  skeleton: Optional[Sequence[Tuple[int, int]]] = None,
                  kpt_thr: float = 0.3) -> np.ndarray:
    """The CAMs of one image over ``image`` (the original image, possibly scaled for display).

    Args:
        image (np.ndarray): RGB uint8 original image (any display size).
        result (BoxCAMResult): The image's CAMs.
        meta (dict): Its sample metainfo (letterbox or resize geometry).
        class_names (Sequence[str]): Names for box captions.
        norm_in_bbox (bool): Normalise each map inside its box, zero outside (MMYOLO's
            ``--norm-in-bbox``). Defaults to False.
        merge (bool): One image-level map (maximum over the boxes) with every box drawn,
            instead of one tile per box. Defaults to False.
        alpha (float): Heat opacity. Defaults to 0.5.
        ncols (int, optional): Tiles per row of the per-box grid.
        norm_in_mask (bool): Normalise each map inside its instance mask, zero outside
            (instance-segmentation detectors only). Defaults to False.
        skeleton (Sequence[tuple[int, int]], optional): Pose detectors: the keypoint pairs
            joined by lines (``ExplainableDetector.skeleton``); None: COCO's for 17
            keypoints. Defaults to None.
        kpt_thr (float): Pose detectors: keypoints whose visibility score is below this are
            not drawn (the explained keypoint of a keypoint CAM always is). Defaults to 0.3.

    Returns:
        np.ndarray: RGB uint8 image: the merged overlay, or a grid of per-box overlays each
        showing its own box and, for instance-segmentation detectors, the outline of its
        mask (the plain image when there is no box); for pose detectors each person's
        keypoints and skeleton, and on a keypoint CAM a ring around the explained keypoint.
        A box whose CAM is
        unreliable (``BoxCAMResult.reasons``: float32 noise) gets no heat: its tile is the
        plain image with its box, captioned ``noise``; in the merged map it adds no heat.
    """
    size = image.shape[:2]
    det = result.detections
    maps, boxes = maps_on_image(result, meta, size, norm_in_bbox, norm_in_mask)
    masks = masks_on_image(result, meta, size)
    masks = None if masks is None else masks.numpy()
    keypoints = keypoints_on_image(result, meta, size)
    labels = det.labels.cpu().numpy()
    scores = det.scores.detach().float().cpu().numpy()
    if len(result) == 0:
        return image.copy()
    if merge:
        base = overlay(image, merge_box_maps(maps), alpha)
        if masks is not None:
            base = draw_mask_outlines(base, masks)
        for k in range(len(result) if keypoints is not None else 0):
            base = draw_keypoints(base, keypoints[0][k], keypoints[1][k], skeleton, kpt_thr,
                                  result.keypoint)
        return draw_boxes(base, boxes, labels, scores, class_names)
    tiles, titles = [], []
    for k, reason in enumerate(result.reasons):
        base = image if reason else overlay(image, maps[k], alpha)
        if masks is not None:
            base = draw_mask_outlines(base, masks[k:k + 1])
        if keypoints is not None:
            base = draw_keypoints(base, keypoints[0][k], keypoints[1][k], skeleton, kpt_thr,
                                  result.keypoint)
        tiles.append(draw_boxes(base, boxes[k:k + 1], labels[k:k + 1], scores[k:k + 1],
                                class_names))
        name = class_names[labels[k]] if labels[k] < len(class_names) else str(labels[k])
        titles.append(f'#{k} {name} {scores[k]:.2f}' + (' noise' if reason else '') +
                      ('' if result.keypoint is None else f' kpt {result.keypoint}'))
    if len(tiles) == 1 and not result.reasons[0]:
        return tiles[0]  # a lone reliable box needs no caption; a noise one keeps its caption
    return make_grid(tiles, titles, ncols=ncols)


def energy_in_boxes(result: BoxCAMResult, meta: Dict, gt_boxes: np.ndarray,
                    size: Optional[Tuple[int, int]] = None,
                    gt_masks: Optional[np.ndarray] = None) -> Optional[float]:
    """Energy-based pointing game for one image: the share of the merged CAM (maximum over the
    explained boxes) that falls inside the ground-truth boxes, or inside the ground-truth
    instance masks where the data has them.

    Args:
        result (BoxCAMResult): The image's CAMs.
        meta (dict): Its sample metainfo.
        gt_boxes (np.ndarray): ``(G, 4)`` xyxy (or ``(G, 5)`` rotated) ground-truth boxes in
            original-image pixels.
        size (tuple[int, int], optional): Evaluate on this (h, w) grid (scaled geometry);
            the original image size when None.
        gt_masks (np.ndarray, optional): ``(G, H, W)`` bool ground-truth instance masks of
            the original image; when given, the region is their union instead of the boxes'.
            Defaults to None.

    Returns:
        float | None: The share in [0, 1]; None when nothing was explained or the map is empty.
    """
    if len(result) == 0:
        return None
    ori_h, ori_w = original_size(meta)
    size = size or (ori_h, ori_w)
    heat = merge_box_maps(result.box_maps(meta, out_size=size).cpu())
    gt_boxes = np.asarray(gt_boxes, np.float32)
    boxes = torch.as_tensor(gt_boxes.reshape(-1, 5 if is_rotated(gt_boxes) else 4))
    boxes = scale_boxes(boxes, size[1] / ori_w, size[0] / ori_h)
    masks = None if gt_masks is None else resize_masks(gt_masks, size)
    return energy_inside(heat, boxes, masks)


def resize_masks(masks: np.ndarray, size: Tuple[int, int]) -> torch.Tensor:
    """``(G, H, W)`` bool masks resized to ``size`` = (h, w) (nearest neighbour)."""
    masks = torch.as_tensor(np.asarray(masks, dtype=bool))
    if masks.shape[0] == 0 or tuple(masks.shape[-2:]) == tuple(size):
        return masks.reshape(-1, *size) if masks.shape[0] == 0 else masks
    return torch.nn.functional.interpolate(masks[None].float(), size=tuple(size),
                                           mode='nearest')[0] > 0.5

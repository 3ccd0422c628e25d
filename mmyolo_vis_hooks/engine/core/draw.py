"""Drawing: heat overlays, boxes, labelled grids. Images are RGB uint8 HWC numpy arrays."""
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from .checks import check_number
from .geometry import box_corners, is_rotated

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def check_alpha(alpha: float) -> float:
    """The heat opacity as a float in [0, 1] (TypeError/ValueError otherwise)."""
    return check_number('alpha', alpha, 0, 1)


# Spreads of a few float32 roundings of the values: no signal. A constant sampled bilinearly
# onto the image (weights summing to 1 in float32) varies by about 1e-7 of its value.
_FLAT_RTOL = 64 * float(np.finfo(np.float32).eps)


def normalize_map(heat: torch.Tensor) -> np.ndarray:
    """Min-max normalises a map to [0, 1]; NaN/Inf are zeroed. A flat map, also one whose
    values differ only by float32 rounding, becomes all zeros (normalising would blow the
    rounding up into noise)."""
    arr = heat.detach().float().cpu().numpy()
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo < max(1e-12, _FLAT_RTOL * max(abs(lo), abs(hi))):
        return np.zeros_like(arr, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def overlay(image: np.ndarray, heat: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blends a map onto an image: JET colour map for (H, W) maps, the map itself for (3, H, W).

    The map must already have the image's size (see ``engine.core.geometry``).
    """
    if heat.dim() == 3:
        rgb = np.stack([normalize_map(c) for c in heat], axis=-1)
        colour = (rgb * 255).astype(np.uint8)
    else:
        norm = (normalize_map(heat) * 255).astype(np.uint8)
        colour = cv2.cvtColor(cv2.applyColorMap(norm, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    if colour.shape[:2] != image.shape[:2]:
        raise ValueError(f'map size {colour.shape[:2]} differs from image size {image.shape[:2]}')
    return cv2.addWeighted(image, 1 - alpha, colour, alpha, 0)


def fit_size(height: int, width: int, max_size: Optional[int]) -> Tuple[int, int]:
    """(h, w) scaled down so the long side is at most ``max_size`` (unchanged when None)."""
    if not max_size or max(height, width) <= max_size:
        return height, width
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int],
               scores: Sequence[float], class_names: Sequence[str],
               color: Tuple[int, int, int] = (255, 255, 255),
               palette: Optional[Sequence[Tuple[int, int, int]]] = None,
               thickness: Optional[int] = None, captions: bool = True) -> np.ndarray:
    """Draws boxes (in this image's pixels) with ``class score`` captions: ``(K, 4)`` xyxy
    rectangles, or ``(K, 5)`` rotated boxes as their polygons.

    Args:
        color (tuple): Box colour when no ``palette`` is given. Defaults to white.
        palette (Sequence[tuple], optional): One colour per class (cycled).
        thickness (int, optional): Line width; about 1 px per 400 px of the long side when
            None. Large images with small boxes want thin lines.
        captions (bool): Write ``class score`` above each box. Defaults to True.
    """
    out = np.array(image, dtype=np.uint8, order='C', copy=True)
    thickness = thickness or max(1, round(max(out.shape[:2]) / 400))
    boxes = np.asarray(boxes, dtype=np.float32)
    rotated = is_rotated(boxes)
    boxes = boxes.reshape(-1, 5 if rotated else 4)
    corners = box_corners(torch.as_tensor(boxes)).numpy() if rotated else None
    for k, (box, label, score) in enumerate(zip(boxes, labels, scores)):
        colour = tuple(int(c) for c in palette[int(label) % len(palette)]) if palette else color
        if rotated:
            polygon = np.round(corners[k]).astype(np.int32)
            cv2.polylines(out, [polygon], True, colour, thickness, cv2.LINE_AA)
            (x1, y1), (x2, y2) = polygon.min(axis=0), polygon.max(axis=0)
        else:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        if not captions:
            continue
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f'{name} {float(score):.2f}'
        (tw, th), _ = cv2.getTextSize(text, _FONT, 0.4, 1)
        ty = y1 if y1 - th - 3 >= 0 else y2 + th + 3
        cv2.rectangle(out, (x1, ty - th - 3), (x1 + tw + 2, ty), colour, -1)
        ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
        cv2.putText(out, text, (x1 + 1, ty - 2), _FONT, 0.4, ink, 1, cv2.LINE_AA)
    return out


def draw_mask_outlines(image: np.ndarray, masks: np.ndarray,
                       color: Tuple[int, int, int] = (255, 255, 255),
                       thickness: Optional[int] = None) -> np.ndarray:
    """Draws the outline of each instance mask (in this image's pixels) on a copy.

    Args:
        image (np.ndarray): RGB uint8 image.
        masks (np.ndarray): ``(K, H, W)`` bool masks of the image's size.
        color (tuple): Outline colour. Defaults to white.
        thickness (int, optional): Line width; about 1 px per 400 px of the long side when
            None (as :func:`draw_boxes`).

    Returns:
        np.ndarray: The image with every mask's outer and inner (hole) contours drawn.
    """
    out = np.array(image, dtype=np.uint8, order='C', copy=True)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != out.shape[:2]:
        raise ValueError(f'masks must be (K, H, W) with the image size {out.shape[:2]}, got '
                         f'{masks.shape}')
    thickness = thickness or max(1, round(max(out.shape[:2]) / 400))
    for mask in masks:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), thickness)
    return out


def _titled(tile: np.ndarray, title: str, bar: int) -> np.ndarray:
    if not bar:
        return tile
    head = np.full((bar, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (3, bar - 5), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([head, tile], axis=0)


def make_grid(tiles: List[np.ndarray], titles: Optional[Sequence[str]] = None,
              ncols: Optional[int] = None, gap: int = 4) -> np.ndarray:
    """Lays tiles out row by row (every tile kept), each under its title.

    Args:
        tiles (list[np.ndarray]): RGB images; smaller ones are padded to the largest.
        titles (Sequence[str], optional): One caption per tile.
        ncols (int, optional): Columns; ``ceil(sqrt(n))`` when None.
        gap (int): White gap between tiles in pixels. Defaults to 4.
    """
    if not tiles:
        raise ValueError('make_grid needs at least one tile')
    titles = list(titles) if titles is not None else [''] * len(tiles)
    bar = 16 if any(titles) else 0
    ncols = ncols or math.ceil(math.sqrt(len(tiles)))
    nrows = math.ceil(len(tiles) / ncols)
    th = max(t.shape[0] for t in tiles) + bar
    tw = max(t.shape[1] for t in tiles)
    canvas = np.full((nrows * th + (nrows - 1) * gap, ncols * tw + (ncols - 1) * gap, 3), 255,
                     np.uint8)
    for i, (tile, title) in enumerate(zip(tiles, titles)):
        r, c = divmod(i, ncols)
        cell = _titled(tile, title, bar)
        y, x = r * (th + gap), c * (tw + gap)
        canvas[y:y + cell.shape[0], x:x + cell.shape[1]] = cell
    return canvas


def display_image(image: np.ndarray, max_size: Optional[int]) -> np.ndarray:
    """The original image scaled so its long side is at most ``max_size``."""
    return resize_image(image, fit_size(image.shape[0], image.shape[1], max_size))


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Grey (H, W) / (H, W, 1) or RGBA -> RGB uint8 (H, W, 3); RGB is returned as is (a view
    of a window stays a view: every consumer copies it once anyway). The alpha channel is
    dropped, not composited."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if pixels.shape[2] == 4:
        return pixels[..., :3]
    return pixels


# COCO's 17-keypoint skeleton, 0-based (mmpose's COCO metainfo ``skeleton_info``).
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
                 (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
                 (3, 5), (4, 6))


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                   skeleton: Optional[Sequence[Tuple[int, int]]] = None,
                   kpt_thr: float = 0.3, highlight: Optional[int] = None,
                   color: Tuple[int, int, int] = (255, 0, 255),
                   radius: Optional[int] = None) -> np.ndarray:
    """Draws one person's keypoints (in this image's pixels): a dot per keypoint whose
    visibility score reaches ``kpt_thr`` and a line per skeleton link between two such
    keypoints.

    Args:
        image (np.ndarray): RGB uint8 image.
        keypoints (np.ndarray): ``(J, 2)`` xy.
        scores (np.ndarray): ``(J, )`` visibility scores.
        skeleton (Sequence[tuple[int, int]], optional): Keypoint pairs to join; None joins
            COCO's (:data:`COCO_SKELETON`) for 17 keypoints and nothing otherwise.
            Defaults to None.
        kpt_thr (float): Keypoints below this score are left out (mmpose's visualizer
            default). Defaults to 0.3.
        highlight (int, optional): A keypoint drawn whatever its score, with a ring (the one a
            keypoint CAM explains). Defaults to None.
        color (tuple): Dot colour. Defaults to magenta.
        radius (int, optional): Dot radius; None scales it with the image. Defaults to None.

    Returns:
        np.ndarray: A drawn copy of the image.
    """
    out = np.array(image, dtype=np.uint8, order='C', copy=True)
    points = np.asarray(keypoints, dtype=np.float32).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if skeleton is None:
        skeleton = COCO_SKELETON if len(points) == 17 else ()
    radius = radius or max(2, round(max(out.shape[:2]) / 150))
    thickness = max(1, radius // 2)
    shown = scores >= kpt_thr
    xy = [(int(round(float(x))), int(round(float(y)))) for x, y in points]
    for a, b in skeleton:
        if a < len(xy) and b < len(xy) and shown[a] and shown[b]:
            cv2.line(out, xy[a], xy[b], (255, 255, 255), thickness, cv2.LINE_AA)
    for j, point in enumerate(xy):
        if shown[j]:
            cv2.circle(out, point, radius, color, -1, cv2.LINE_AA)
            cv2.circle(out, point, radius, (255, 255, 255), 1, cv2.LINE_AA)
    if highlight is not None and 0 <= highlight < len(xy):
        cv2.circle(out, xy[highlight], radius * 2, (255, 255, 0), thickness + 1, cv2.LINE_AA)
    return out

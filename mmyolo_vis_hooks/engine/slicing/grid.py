"""The slice grid of a large image, argument checks, and reading one slice as RGB uint8.

The grid is sahi's (``sahi.slicing.get_slice_bboxes``), which MMYOLO's large-image demo also
uses: windows step by ``patch - int(overlap * patch)`` and the last row/column is shifted back so
it ends on the image border, so every window has the full patch size unless the image itself is
smaller than the patch. Only coordinates are computed here; pixels are read one window at a
time, so the whole image is never converted (to RGB, to float) at once; an image too big to
hold whole (a TIFF read window by window) is pictured by :func:`read_overview`, built from
full-width bands.
"""
from typing import Any, Optional, Tuple

import cv2
import numpy as np

from ..core.checks import check_int, check_number
from ..core.draw import to_rgb

SUPPORTED_CHANNELS = (1, 3, 4)
# Images above this many pixels (8192 x 8192; 192 MiB as RGB) are huge: they are never read
# whole (:func:`read_picture` gives an overview instead), and a huge TIFF that cannot be read
# window by window is refused rather than decoded whole (``runtime.images.open_image``).
HUGE_IMAGE_PIXELS = 8192 * 8192
# The longer side of a huge image's overview (an integer shrink factor brings it below).
OVERVIEW_MAX_SIDE = 4096
# Pixels an overview reads at once (full-width bands; 12 MiB as RGB).
OVERVIEW_BAND_PIXELS = 1 << 22


def check_patch_size(patch_size: Any) -> int:
    """Returns the patch size as an int, or raises ValueError/TypeError."""
    return check_int('patch size', patch_size, low=1,
                     accepted='a positive number of pixels (an int)')


def check_overlap_ratio(overlap_ratio: Any) -> float:
    """Returns the overlap ratio as a float in [0, 1), or raises ValueError/TypeError."""
    return check_number('patch overlap ratio', overlap_ratio, 0, 1, high_open=True)


def image_geometry(image: Any) -> Tuple[int, int, int]:
    """Checks an image array (without reading its pixels) and returns (height, width, channels).

    Accepted: uint8 arrays of shape (H, W) or (H, W, C) with C in 1 (grey), 3 (RGB), 4 (RGBA).
    Any array-like with ``shape``, ``dtype`` and numpy slicing works (``np.memmap`` included).
    """
    shape, dtype = getattr(image, 'shape', None), getattr(image, 'dtype', None)
    if shape is None or dtype is None:
        raise TypeError(f'image must be a numpy array (H, W[, C]) of uint8, got {type(image)}')
    if np.dtype(dtype) != np.uint8:
        raise TypeError(f'image must be uint8 (0-255), got dtype {dtype}')
    if len(shape) == 2:
        channels = 1
    elif len(shape) == 3 and shape[2] in SUPPORTED_CHANNELS:
        channels = int(shape[2])
    else:
        raise ValueError(f'image must have shape (H, W) or (H, W, C) with C in '
                         f'{SUPPORTED_CHANNELS}, got {tuple(shape)}')
    height, width = int(shape[0]), int(shape[1])
    if height == 0 or width == 0:
        raise ValueError(f'image is empty: shape {tuple(shape)}')
    return height, width, channels


def slice_windows(height: int, width: int, patch_size: int,
                  overlap_ratio: float) -> np.ndarray:
    """The slice windows of an image, as an (N, 4) int array of [x1, y1, x2, y2].

    Args:
        height (int): Image height.
        width (int): Image width.
        patch_size (int): Square patch side in pixels.
        overlap_ratio (float): Overlap of neighbouring patches, in [0, 1).

    Returns:
        np.ndarray: Windows in row-major order (the order sahi and MMYOLO's demo use).
    """
    from sahi.slicing import get_slice_bboxes
    patch_size = check_patch_size(patch_size)
    overlap_ratio = check_overlap_ratio(overlap_ratio)
    windows = get_slice_bboxes(
        image_height=height, image_width=width, slice_height=patch_size, slice_width=patch_size,
        auto_slice_resolution=False, overlap_height_ratio=overlap_ratio,
        overlap_width_ratio=overlap_ratio)
    return np.asarray(windows, dtype=np.int64).reshape(-1, 4)


def read_window(image: Any, window: np.ndarray) -> np.ndarray:
    """Reads one window of an image (see :func:`image_geometry`) as RGB uint8 (h, w, 3),
    possibly a non-contiguous view."""
    x1, y1, x2, y2 = (int(v) for v in window)
    return to_rgb(np.asarray(image[y1:y2, x1:x2]))


def overview_factor(height: int, width: int, max_side: int) -> int:
    """The smallest integer shrink factor that brings the longer side to ``max_side`` or
    below."""
    max_side = check_int('overview side', max_side, low=1)
    return max(1, -(-max(int(height), int(width)) // max_side))


def read_overview(image: Any, factor: int, band_pixels: Optional[int] = None) -> np.ndarray:
    """The image shrunk by an integer factor, as RGB uint8 ``(H // factor, W // factor, 3)``:
    each output pixel is the mean of ``factor x factor`` image pixels (OpenCV's INTER_AREA at
    an integer factor), so bands join without seams; the last ``H % factor`` rows and
    ``W % factor`` columns are left out. Pixels are read in full-width bands of about
    ``band_pixels`` (the order strips and tile rows are stored in), never the whole image.

    Args:
        image: An image (see :func:`image_geometry`).
        factor (int): Shrink factor, at most the shorter side.
        band_pixels (int, optional): Pixels read at once (about); ``OVERVIEW_BAND_PIXELS``
            (4 Mpx) when None. Defaults to None.
    """
    height, width, _ = image_geometry(image)
    factor = check_int('overview factor', factor, low=1, high=min(height, width))
    out_h, out_w = height // factor, width // factor
    out = np.empty((out_h, out_w, 3), np.uint8)
    band_pixels = band_pixels or OVERVIEW_BAND_PIXELS
    step = max(1, band_pixels // (width * factor * factor))  # output rows per band
    for y in range(0, out_h, step):
        rows = min(step, out_h - y)
        band = read_window(image, np.array([0, y * factor, out_w * factor,
                                            (y + rows) * factor]))
        out[y:y + rows] = band if factor == 1 else cv2.resize(
            band, (out_w, rows), interpolation=cv2.INTER_AREA)
    return out


def read_picture(image: Any, max_side: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """The whole image as RGB uint8, or for a huge image (more than ``HUGE_IMAGE_PIXELS``) its
    overview (:func:`read_overview`) with the longer side at most ``max_side``
    (``OVERVIEW_MAX_SIDE`` when None).

    Returns:
        tuple[np.ndarray, int]: The picture and its shrink factor (1: the image itself).
    """
    height, width, _ = image_geometry(image)
    if height * width <= HUGE_IMAGE_PIXELS:
        return read_window(image, np.array([0, 0, width, height])), 1
    factor = overview_factor(height, width, max_side or OVERVIEW_MAX_SIDE)
    return read_overview(image, factor), factor

"""Image files: listing the inputs of a tool (a file, a folder, a text file of paths), reading
them (one reader for hooks and tools) and writing pictures."""
import os
import os.path as osp
from typing import List

import cv2
import numpy as np

from ..engine.core.render import to_rgb

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(source: str) -> List[str]:
    """Image paths from a file, a folder (searched recursively, sorted) or a ``.txt`` list.

    Raises:
        FileNotFoundError: Nothing exists at ``source``.
        ValueError: A folder or list holds no images, or a file has an unsupported extension.
    """
    if osp.isdir(source):
        paths = sorted(
            osp.join(root, name) for root, _, names in os.walk(source) for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {source}')
        return paths
    if not osp.isfile(source):
        raise FileNotFoundError(f'image, folder or list not found: {source}')
    if source.lower().endswith('.txt'):
        base = osp.dirname(osp.abspath(source))
        with open(source, encoding='utf-8') as f:
            paths = [line.strip() for line in f if line.strip()]
        paths = [p if osp.isabs(p) else osp.join(base, p) for p in paths]
        if not paths:
            raise ValueError(f'the image list {source} is empty')
        return paths
    if not source.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(f'unsupported image file {source}; expected one of '
                         f'{", ".join(IMAGE_EXTENSIONS)}, a folder, or a .txt list of paths')
    return [source]


def read_image(path: str) -> np.ndarray:
    """Reads an image file as it is: uint8 grey (H, W), RGB or RGBA; 16-bit images are scaled
    to 8 bits. The one image reader of the package (:func:`read_rgb` for RGB).

    Raises:
        FileNotFoundError: Missing file. ValueError: unreadable or corrupt image.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f'cannot decode image {path} (corrupt or unsupported format)')
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f'unsupported pixel type {img.dtype} in {path}; 8- or 16-bit images '
                         f'are accepted')
    if img.ndim == 3 and img.shape[2] == 3:
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)
    elif img.ndim == 3 and img.shape[2] == 4:
        cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA, dst=img)
    return img


def read_rgb(path: str) -> np.ndarray:
    """Reads an image file as RGB uint8 (H, W, 3): grey is repeated, alpha dropped."""
    return np.ascontiguousarray(to_rgb(read_image(path)))


def write_rgb(path: str, rgb: np.ndarray, png_compression: int = 3) -> None:
    """Writes an RGB picture (folders created); PNG at the given zlib level (0: stored,
    without filtering, the fastest for large pictures)."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(f'cannot write {path}: unsupported picture format; use one of '
                         f'{", ".join(IMAGE_EXTENSIONS)}')
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    params = []
    if path.lower().endswith('.png'):
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
        if png_compression == 0:  # filters only help compression
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f'could not write {path}')

"""Image files: listing the inputs of a tool (a file, a folder, a text file of paths), reading
them (one reader for hooks and tools; TIFFs also window by window, for images bigger than
memory) and writing pictures."""
import os
import os.path as osp
from typing import Any, List, Union

import cv2
import numpy as np

from ..engine.core.render import to_rgb
from ..engine.slicing.grid import HUGE_IMAGE_PIXELS

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


def open_image(path: str) -> Union[np.ndarray, Any]:
    """Opens an image for reading window by window (sliced inference): a TIFF as a
    :class:`~.tiff.TiffImage` (array-like, pixels decoded per window; needs tifffile), any
    other file read whole by :func:`read_image`. A TIFF whose layout or codec cannot be read
    window by window (e.g. LZW without imagecodecs) is read whole by OpenCV unless it is huge
    (:data:`HUGE_IMAGE_PIXELS`). Release it with :func:`close_image`.

    Raises:
        MissingPackageError: A TIFF and no tifffile. FileNotFoundError, ValueError: as read_image;
        ValueError also for a huge TIFF that cannot be read window by window.
    """
    from .tiff import NotWindowReadable, TiffImage, is_tiff
    if not is_tiff(path):
        return read_image(path)
    try:
        return TiffImage(path)
    except NotWindowReadable as err:
        if err.pixels > HUGE_IMAGE_PIXELS:
            raise
        return read_image(path)


def close_image(image: Any) -> None:
    """Closes what :func:`open_image` returned (a no-op for arrays)."""
    close = getattr(image, 'close', None)
    if callable(close) and not isinstance(image, np.ndarray):
        close()


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

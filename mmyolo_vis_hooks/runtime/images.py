"""Image files: listing the inputs of a tool (a file, a folder, a text file of paths), reading
them (one reader for hooks and tools; TIFFs also window by window, for images bigger than
memory) and writing pictures."""
import os
import os.path as osp
import struct
import zlib
from typing import Any, BinaryIO, List, Union

import cv2
import numpy as np

from ..engine.core.draw import to_rgb
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
    without filtering, the fastest for large pictures: :func:`write_stored_png`)."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(f'cannot write {path}: unsupported picture format; use one of '
                         f'{", ".join(IMAGE_EXTENSIONS)}')
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    params = []
    if path.lower().endswith('.png'):
        if png_compression == 0:
            write_stored_png(path, rgb)
            return
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f'could not write {path}')


_PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA


def _png_chunk(f: BinaryIO, kind: bytes, data: bytes) -> None:
    f.write(struct.pack('>I', len(data)) + kind)
    f.write(data)
    f.write(struct.pack('>I', zlib.crc32(data, zlib.crc32(kind))))


def write_stored_png(path: str, pixels: np.ndarray, rows_per_chunk: int = 64) -> None:
    """Writes uint8 pixels (H, W) or (H, W, 1-4 channels; RGB order) as an uncompressed PNG:
    zlib's stored blocks, no row filters, the file libpng writes at level 0. It skips libpng's
    per-row work and a colour-order copy: half of OpenCV's time on the 3000x2000 picture
    (``benchmarks/bench_large_image.py``, its write phases). Rows are encoded one band at
    a time, so the picture is never copied whole."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (
            pixels.ndim == 3 and pixels.shape[2] not in _PNG_COLOR_TYPES):
        raise ValueError(f'cannot write {path}: expected uint8 pixels (H, W) or (H, W, 1-4), '
                         f'got {pixels.dtype} {pixels.shape}')
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n')
        _png_chunk(f, b'IHDR', struct.pack('>IIBBBBB', width, height, 8,
                                           _PNG_COLOR_TYPES[channels], 0, 0, 0))
        stream = zlib.compressobj(0)
        # Each row starts with its filter type; 0 (none) is what the zeros leave there.
        band = np.zeros((min(rows_per_chunk, height), width * channels + 1), np.uint8)
        for top in range(0, height, rows_per_chunk):
            rows = min(rows_per_chunk, height - top)
            band[:rows, 1:] = pixels[top:top + rows].reshape(rows, -1)
            data = stream.compress(band[:rows])
            if data:
                _png_chunk(f, b'IDAT', data)
        _png_chunk(f, b'IDAT', stream.flush())
        _png_chunk(f, b'IEND', b'')

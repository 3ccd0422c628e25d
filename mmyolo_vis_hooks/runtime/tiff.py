"""TIFF files read window by window (images bigger than memory), and their GeoTIFF
georeferencing.

:class:`TiffImage` is an array-like (``shape``, ``dtype``, ``image[y1:y2, x1:x2]``) that the
slicing engine reads like a numpy array (``engine.slicing.grid.read_window``), but only the
strips or tiles a window touches are read from the file and decoded, through tifffile's own
per-segment decoder (``TiffPage.decode``: every compression tifffile knows, predictors, fill
order). Decoded segments are kept in a small LRU cache (``cache_bytes``), so the overlapping
slices of one row of windows decode each tile once or twice. Uncompressed strips (tifffile and
OpenCV write a whole uncompressed image as ONE strip) are read row range by row range from the
file, never as a whole strip.

Converting a TiffImage to a numpy array as a whole (``np.asarray(image)``) raises a TypeError:
every reader in the package reads windows, and this guard makes a slip fail loudly instead of
decoding gigabytes.

tifffile (pure Python, numpy only) comes with the ``sliced`` extra; it is imported when a TIFF
is opened. Compressions other than deflate, packbits and LZMA (LZW, JPEG, ZSTD, ...) need
``imagecodecs``, which the ``sliced`` extra also brings.
"""
import os.path as osp
import threading
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

TIFF_EXTENSIONS = ('.tif', '.tiff')
_MISSING = ("reading TIFF files window by window needs the 'tifffile' package: pip install "
            "'mmyolo_vis_hooks[sliced]' (or: pip install tifffile)")
# Uncompressed strips are read in blocks of whole rows of about this size.
_RAW_BLOCK_BYTES = 1 << 20
# The decoded-segment cache: at least this, and at least 3 segments (a row of slices spans 2).
_MIN_CACHE_BYTES = 32 << 20
# GeoKeys naming the CRS (GeoTIFF 1.0): projected, then geographic; 32767 is user-defined.
_CRS_KEYS = ('ProjectedCSTypeGeoKey', 'GeographicTypeGeoKey')
_USER_DEFINED = 32767


def is_tiff(path: str) -> bool:
    return path.lower().endswith(TIFF_EXTENSIONS)


class NotWindowReadable(ValueError):
    """A TIFF that cannot be read window by window here (its layout or codec); ``pixels`` is
    its size, so that a caller may read a small one whole instead."""

    def __init__(self, message: str, pixels: int) -> None:
        super().__init__(message)
        self.pixels = pixels


class MissingPackageError(ImportError):
    """An optional package a feature needs is not installed (the message says how to get
    it); the command-line tools report it in one line."""


def import_tifffile():
    """The tifffile module, or a MissingPackageError saying how to install it."""
    try:
        import tifffile
    except ImportError:
        raise MissingPackageError(_MISSING) from None
    return tifffile


class GeoReference:
    """A GeoTIFF's pixel-to-map transform and its GeoKeys.

    Args:
        transform (sequence of 6 floats): ``(a, b, c, d, e, f)``: a point at pixel coordinates
            ``(x, y)`` (x right, y down; ``(0, 0)`` is the top-left CORNER of the top-left
            pixel) lies at map coordinates ``X = a*x + b*y + c``, ``Y = d*x + e*y + f``
            (rasterio's/affine's order).
        geokeys (dict): The GeoKeys, JSON-ready (names to numbers or strings).
    """

    def __init__(self, transform: Sequence[float], geokeys: Dict[str, Any]) -> None:
        self.transform = tuple(float(v) for v in transform)
        self.geokeys = dict(geokeys)

    @property
    def crs(self) -> Optional[str]:
        """``EPSG:<code>`` from the GeoKeys, or None when user-defined or absent."""
        for key in _CRS_KEYS:
            code = self.geokeys.get(key)
            if isinstance(code, int) and code not in (0, _USER_DEFINED):
                return f'EPSG:{code}'
        return None

    @classmethod
    def from_tags(cls, tags: Dict[str, Any]) -> Optional['GeoReference']:
        """From tifffile's ``TiffPage.geotiff_tags``; None without a usable transform.

        ModelTransformation (4x4, row-major) wins over ModelPixelScale + ModelTiepoint (the
        GeoTIFF rule). With ``GTRasterTypeGeoKey`` = PixelIsPoint the tags refer to pixel
        centres, so the transform is shifted by half a pixel (as GDAL does).
        """
        geokeys = {k: _plain(v) for k, v in tags.items()
                   if k not in ('ModelPixelScale', 'ModelTiepoint', 'ModelTransformation')}
        matrix = tags.get('ModelTransformation')
        if matrix is not None:
            m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
            a, b, c, d, e, f = m[0, 0], m[0, 1], m[0, 3], m[1, 0], m[1, 1], m[1, 3]
        else:
            scale, tie = tags.get('ModelPixelScale'), tags.get('ModelTiepoint')
            if scale is None or tie is None or len(tie) < 6:
                return None
            (sx, sy), (i, j, x, y) = scale[:2], (tie[0], tie[1], tie[3], tie[4])
            a, b, c, d, e, f = sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy
        if geokeys.get('GTRasterTypeGeoKey') == 2:  # PixelIsPoint
            c, f = c - 0.5 * (a + b), f - 0.5 * (d + e)
        return cls((a, b, c, d, e, f), geokeys)

    def to_map(self, boxes: np.ndarray) -> np.ndarray:
        """Pixel boxes (N, 4) ``[x1, y1, x2, y2]`` -> the map envelope of each box's four
        corners, (N, 4) float64 ``[xmin, ymin, xmax, ymax]`` (exact for north-up images)."""
        a, b, c, d, e, f = self.transform
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        xs = boxes[:, [0, 2, 2, 0]]
        ys = boxes[:, [1, 1, 3, 3]]
        mx, my = a * xs + b * ys + c, d * xs + e * ys + f
        return np.stack([mx.min(1), my.min(1), mx.max(1), my.max(1)], axis=1)

    def as_dict(self) -> Dict[str, Any]:
        """JSON-ready: ``transform``, ``crs`` and ``geokeys``."""
        return dict(transform=list(self.transform), crs=self.crs, geokeys=self.geokeys)


def _plain(value: Any) -> Any:
    """A GeoKey value as JSON: enum members by their number, arrays as lists."""
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, int)):  # IntEnum members included
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return str(value)


class TiffImage:
    """The first page of a TIFF file as an array-like image read window by window.

    Accepted: 8- or 16-bit (scaled to 8 bits, as ``images.read_image`` does) grey, RGB or
    RGBA pixels, stored in strips or tiles, chunky (interleaved) samples. Other pages (a
    pyramid's overviews) are ignored.

    Args:
        path (str): The TIFF file.
        cache_bytes (int, optional): Budget of the decoded-segment cache; None: 32 MiB or
            three segments, whichever is larger. Defaults to None.
        max_segment_bytes (int): The largest decoded strip or tile accepted (a compressed
            segment can only be decoded whole, and a slice may need several). Defaults to
            128 MiB.

    Attributes:
        shape (tuple): ``(H, W)`` or ``(H, W, C)``.
        dtype (np.dtype): uint8.
        geo (GeoReference, optional): The GeoTIFF georeferencing, if the file has one.
        pixels_decoded (int): Pixels decoded so far (segments, or rows of raw strips).
        largest_block (int): Pixels of the largest block decoded at once.
        largest_read (int): Pixels of the largest window returned.

    Raises:
        MissingPackageError: tifffile is missing. FileNotFoundError: no such file. ValueError: not
        a TIFF, or a layout that cannot be read window by window.
    """

    def __init__(self, path: str, cache_bytes: Optional[int] = None,
                 max_segment_bytes: int = 128 << 20) -> None:
        if not osp.isfile(path):
            raise FileNotFoundError(f'image not found: {path}')
        tifffile = import_tifffile()
        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError) as err:
            raise ValueError(f'cannot read TIFF {path}: {err}') from None
        try:
            self._setup(tifffile, cache_bytes, max_segment_bytes)
        except BaseException:
            self._tif.close()
            raise

    def _setup(self, tifffile, cache_bytes: Optional[int], max_segment_bytes: int) -> None:
        if not len(self._tif.pages):
            raise ValueError(f'cannot read TIFF {self.path}: it holds no image')
        page = self._tif.pages[0]
        try:
            self._read_layout(tifffile, page, cache_bytes, max_segment_bytes)
        except ValueError as err:
            raise NotWindowReadable(str(err), int(page.imagelength) * int(page.imagewidth)
                                    ) from None

    def _read_layout(self, tifffile, page, cache_bytes: Optional[int],
                      max_segment_bytes: int) -> None:
        path = self.path
        if page.dtype is None or np.dtype(page.dtype) not in (np.uint8, np.uint16):
            raise ValueError(f'unsupported pixel type {page.dtype} in {path}; 8- or 16-bit '
                             f'images are accepted')
        bits = np.dtype(page.dtype).itemsize * 8
        samples = page.samplesperpixel
        if samples not in (1, 3, 4) or page.shaped[1] != 1:
            raise ValueError(f'{path}: {samples} samples per pixel (shape {page.shape}); '
                             f'grey, RGB or RGBA images are accepted')
        if samples > 1 and page.planarconfig != tifffile.PLANARCONFIG.CONTIG:
            raise ValueError(f'{path} stores each colour in its own plane (PlanarConfiguration '
                             f'2); interleaved samples are accepted (e.g. gdal_translate -co '
                             f'INTERLEAVE=PIXEL)')
        accepted = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB,
                    tifffile.PHOTOMETRIC.YCBCR)  # YCbCr: JPEG-compressed, decoded to RGB
        if page.photometric not in accepted:
            kind = getattr(page.photometric, 'name', page.photometric)
            raise ValueError(f'{path} has {kind} pixels (PhotometricInterpretation); grey '
                             f'(MINISBLACK), RGB or RGBA pixels are accepted')
        try:
            if page.compression != tifffile.COMPRESSION.NONE:
                tifffile.TIFF.DECOMPRESSORS[page.compression]  # KeyError: codec missing
            self._decode = page.decode
        except (KeyError, ValueError, NotImplementedError) as err:
            codec = getattr(page.compression, 'name', page.compression)
            raise ValueError(f'cannot decode {path} ({codec} compression): '
                             f'{str(err).strip(chr(34))}; imagecodecs adds LZW, JPEG and the '
                             f"other codecs: pip install 'mmyolo_vis_hooks[sliced]' (or: pip "
                             f'install imagecodecs)') from None
        self._page = page
        self._scale16 = bits == 16
        height, width = int(page.imagelength), int(page.imagewidth)
        self.shape = (height, width) if samples == 1 else (height, width, samples)
        self.dtype = np.dtype(np.uint8)
        self._samples = samples
        self._raw = page.compression == tifffile.COMPRESSION.NONE and not page.is_tiled
        if page.is_tiled:
            self._block = (int(page.tilelength), int(page.tilewidth))
        elif self._raw:  # read rows straight from the file, in blocks of ~1 MiB
            row_bytes = width * samples * bits // 8
            self._block = (max(1, min(height, _RAW_BLOCK_BYTES // row_bytes)), width)
        else:
            self._block = (min(height, int(page.rowsperstrip) or height), width)
        block_bytes = self._block[0] * self._block[1] * samples * bits // 8
        if block_bytes > max_segment_bytes:
            raise ValueError(
                f'{path} stores its pixels in compressed strips or tiles of '
                f'{self._block[0]}x{self._block[1]} pixels ({block_bytes / 2**20:.0f} MiB '
                f'decoded), which cannot be read window by window within '
                f'{max_segment_bytes / 2**20:.0f} MiB; write it with smaller tiles (e.g. '
                f'gdal_translate -co TILED=YES, or tifffile.imwrite(..., tile=(512, 512)))')
        cache_bytes = cache_bytes or max(_MIN_CACHE_BYTES, 3 * block_bytes)
        self._blocks_across = -(-width // self._block[1])
        self._cache: 'OrderedDict[int, np.ndarray]' = OrderedDict()
        self._cache_bytes, self._cached = cache_bytes, 0
        self._lock = threading.Lock()
        self.geo = GeoReference.from_tags(page.geotiff_tags or {}) if page.is_geotiff else None
        self.pixels_decoded = self.largest_block = self.largest_read = 0

    def __repr__(self) -> str:
        return f'TiffImage({self.path!r}, shape={self.shape})'

    def __array__(self, *args, **kwargs):
        raise TypeError(f'{self!r} is read window by window (image[y1:y2, x1:x2]); converting '
                        f'it whole would decode every pixel at once')

    def close(self) -> None:
        self._cache.clear()
        self._tif.close()

    def __enter__(self) -> 'TiffImage':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getitem__(self, key) -> np.ndarray:
        """``image[y1:y2, x1:x2]`` (and ``[..., c]``): a new uint8 array; steps are not
        supported."""
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 3 or not all(isinstance(k, slice) for k in key[:2]):
            raise IndexError(f'{self!r} takes windows image[y1:y2, x1:x2], got {key!r}')
        spans = []
        for k, size in zip(key[:2], self.shape[:2]):
            start, stop, step = k.indices(size)
            if step != 1:
                raise IndexError(f'{self!r}: slices with a step are not supported')
            spans.append((start, max(start, stop)))
        (y1, y2), (x1, x2) = (spans + [(0, self.shape[1])])[:2]
        out = self.read(y1, y2, x1, x2)
        return out[(slice(None), slice(None)) + key[2:]] if len(key) == 3 else out

    def read(self, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
        """Pixels ``[y1:y2, x1:x2]`` (clipped to the image) as uint8 (h, w[, C])."""
        height, width = self.shape[:2]
        y1, y2, x1, x2 = max(0, y1), min(height, y2), max(0, x1), min(width, x2)
        h, w = max(0, y2 - y1), max(0, x2 - x1)
        out = np.empty((h, w) + self.shape[2:], np.uint8)
        self.largest_read = max(self.largest_read, h * w)
        if not h or not w:
            return out
        bh, bw = self._block
        rows, cols = range(y1 // bh, (y2 - 1) // bh + 1), range(x1 // bw, (x2 - 1) // bw + 1)
        with self._lock:
            for r in rows:
                for c in cols:
                    block = self._get_block(r, c)
                    by, bx = r * bh, c * bw
                    ys, ye = max(y1, by), min(y2, by + block.shape[0])
                    xs, xe = max(x1, bx), min(x2, bx + block.shape[1])
                    out[ys - y1:ye - y1, xs - x1:xe - x1] = block[ys - by:ye - by,
                                                                  xs - bx:xe - bx]
        return out

    def _get_block(self, row: int, col: int) -> np.ndarray:
        index = row * self._blocks_across + col
        block = self._cache.get(index)
        if block is not None:
            self._cache.move_to_end(index)
            return block
        block = self._read_raw_rows(row) if self._raw else self._decode_segment(index)
        if self._scale16:
            block = (block >> 8).astype(np.uint8)
        self.pixels_decoded += block.shape[0] * block.shape[1]
        self.largest_block = max(self.largest_block, block.shape[0] * block.shape[1])
        self._cache[index] = block
        self._cached += block.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            self._cached -= self._cache.popitem(last=False)[1].nbytes
        return block

    def _decode_segment(self, index: int) -> np.ndarray:
        """One strip or tile through tifffile's decoder, cropped to the image."""
        page = self._page
        fh = self._tif.filehandle
        fh.seek(page.dataoffsets[index])
        data = fh.read(page.databytecounts[index])
        try:
            decoded = self._decode(data, index, jpegtables=page.jpegtables)[0]
        except Exception as err:  # tifffile/imagecodecs raise many types for corrupt data
            raise ValueError(f'cannot decode segment {index} of {self.path}: {err}') from None
        height, width = self.shape[:2]
        bh, bw = self._block
        row, col = divmod(index, self._blocks_across)
        dtype = np.uint16 if self._scale16 else np.uint8
        if decoded is None:  # an empty (sparse) segment
            decoded = np.zeros((1, bh, bw, self._samples), dtype)
        block = decoded.reshape(decoded.shape[-3:])[:height - row * bh, :width - col * bw]
        return block[..., 0] if self._samples == 1 else block

    def _read_raw_rows(self, row: int) -> np.ndarray:
        """Rows of uncompressed strips straight from the file (strips may hold any number of
        rows, one strip the whole image)."""
        page = self._page
        height, width = self.shape[:2]
        bh = self._block[0]
        y1, y2 = row * bh, min(height, (row + 1) * bh)
        dtype = np.dtype(np.uint16 if self._scale16 else np.uint8).newbyteorder(
            self._tif.byteorder)
        row_bytes = width * self._samples * dtype.itemsize
        rps = int(page.rowsperstrip) or height
        fh = self._tif.filehandle
        parts: List[bytes] = []
        y = y1
        while y < y2:  # contiguous row ranges inside one strip
            strip, within = divmod(y, rps)
            stop = min(y2, (strip + 1) * rps)
            fh.seek(page.dataoffsets[strip] + within * row_bytes)
            parts.append(fh.read((stop - y) * row_bytes))
            y = stop
        flat = np.frombuffer(b''.join(parts), dtype)
        if flat.size != (y2 - y1) * width * self._samples:
            raise ValueError(f'{self.path} is truncated (rows {y1}-{y2} are missing)')
        block = flat.reshape((y2 - y1, width) + self.shape[2:]).astype(dtype.newbyteorder('='))
        return block


def add_map_boxes(geo: Optional[GeoReference], image_entry: Dict,
                  *annotation_lists: Sequence[Dict]) -> None:
    """Adds a GeoTIFF's georeferencing to COCO-style output (nothing without one): the image
    entry gets ``geo`` (:meth:`GeoReference.as_dict`), each annotation ``bbox_map``, its box
    ``[xmin, ymin, xmax, ymax]`` in map coordinates (:meth:`GeoReference.to_map` of its pixel
    ``bbox`` ``[x, y, w, h]``)."""
    if geo is None:
        return
    image_entry['geo'] = geo.as_dict()
    for annotations in annotation_lists:
        if not annotations:
            continue
        xywh = np.array([a['bbox'] for a in annotations], dtype=np.float64)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        for ann, box in zip(annotations, geo.to_map(boxes)):
            ann['bbox_map'] = [float(v) for v in box]

"""Sliced inference on large images with an MMYOLO detector.

The flags of MMYOLO's ``demo/large_image_demo.py`` (image or folder, config, checkpoint,
``--patch-size``, ``--patch-overlap-ratio``, ``--merge-iou-thr``, ``--merge-nms-type``,
``--batch-size``, ``--debug``, ``--save-patch``, ``--score-thr``, ``--out-dir``, ``--show``,
``--device``), plus sahi's merge choices (``--merge-nms-type nms|nmm|greedynmm`` next to
MMYOLO's ``soft_nms``, ``--merge-metric IOU|IOS``), ``--class-agnostic``, ``--full-image``,
``--fuse-conv-bn``, ``--cfg-options``, ``--unsafe-load`` and ``--png-compression``.

Writes to ``--out-dir``: ``<name>`` (the image with the merged boxes), ``detections.json``
(COCO-style: images, categories with id = label + 1, annotations with scores), and with
``--debug`` ``<stem>_debug.png`` (slice grid + unmerged boxes), with ``--save-patch``
``patches/<stem>/<stem>_<index>_<x>_<y>.png`` (each slice with its own boxes).

Example::

    python tools/large_image_infer.py data/large/large_00000.png \\
        configs/demo/yolov5_n_shapes_320.py tests/assets/yolov5_n_shapes.pth \\
        --batch-size 8 --class-agnostic --out-dir outputs/large
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from mmengine.config import DictAction
from tqdm import tqdm

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmyolo_vis_hooks.engine.cli import show_image  # noqa: E402
from mmyolo_vis_hooks.engine.images import list_images  # noqa: E402
from mmyolo_vis_hooks.engine.inference import build_detector  # noqa: E402
from mmyolo_vis_hooks.engine.slicing import (BatchPredictor, Detections,  # noqa: E402
                                             MergeConfig, SlicedResult, SliceSettings,
                                             coco_document, draw_detections, draw_windows,
                                             image_geometry, read_window, resolve_patch_size,
                                             slice_windows, sliced_predict,
                                             to_coco_annotations)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory(mmap_threshold: int = 128 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Makes glibc keep freed memory for reuse (this process only; returns False elsewhere).

    With glibc's adaptive defaults, the activations freed after each batch are handed back to
    the OS and faulted in again by the next batch once slicing, decoding and drawing allocate
    in between: about 120k page faults on the embedded image, 10-15% more CPU time in the
    forward passes. Memory then stays with the process until it exits (up to
    ``trim_threshold`` bytes above what is in use).
    """
    import ctypes
    try:
        libc = ctypes.CDLL('libc.so.6')
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                    and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


MERGE_TYPES = ('nms', 'soft_nms', 'nmm', 'greedynmm')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Sliced (tiled) inference on large images with an MMYOLO detector.')
    parser.add_argument('img', help='image file, folder (searched recursively) or .txt list '
                        'of image paths')
    parser.add_argument('config', help='config file (or mmyolo:: name)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='./output', help='output folder')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
    parser.add_argument('--show', action='store_true', help='show each result in a window')
    parser.add_argument('--score-thr', type=float, default=0.3, help='box score threshold')
    parser.add_argument('--patch-size', type=int, default=None,
                        help='slice side in pixels (default: the model input size, so slices '
                        'are not resized)')
    parser.add_argument('--patch-overlap-ratio', type=float, default=0.25,
                        help='overlap of neighbouring slices, in [0, 1)')
    parser.add_argument('--merge-iou-thr', type=float, default=0.25,
                        help='overlap threshold for merging the slices\' boxes')
    parser.add_argument('--merge-nms-type', type=str.lower, default='nms', choices=MERGE_TYPES,
                        help='how the slices\' boxes are merged')
    parser.add_argument('--merge-metric', type=str.upper, default='IOU', choices=('IOU', 'IOS'),
                        help='overlap measure of the merge: IoU, or intersection over the '
                        'smaller box (IOS)')
    parser.add_argument('--class-agnostic', action='store_true',
                        help='merge boxes across labels (a class-wise merge keeps one object '
                        'once per predicted label)')
    parser.add_argument('--full-image', action='store_true',
                        help='also run the whole image (letterboxed) and merge its boxes')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='slices per forward pass')
    parser.add_argument('--debug', action='store_true',
                        help='also write <stem>_debug.png: slice grid and unmerged boxes')
    parser.add_argument('--save-patch', action='store_true',
                        help='also write every slice with its own boxes')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fuse conv and bn layers (faster inference)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='load a checkpoint holding arbitrary pickled objects (runs code '
                        'from the file; only for files you trust)')
    parser.add_argument('--png-compression', type=int, default=0, choices=range(10),
                        metavar='{0..9}',
                        help='zlib level of the PNG pictures written; 0 (default) stores them '
                        'uncompressed (3000x2000 here: 0.03 s CPU, 18 MB; level 1: 0.39 s, '
                        '12 MB, a third of that image\'s whole run)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> SliceSettings:
    """Checks every slicing argument (ValueError/TypeError) before any work is done."""
    merge = MergeConfig(method=args.merge_nms_type, metric=args.merge_metric,
                        threshold=args.merge_iou_thr, class_agnostic=args.class_agnostic)
    return SliceSettings(patch_size=args.patch_size, overlap_ratio=args.patch_overlap_ratio,
                         batch_size=args.batch_size, score_thr=args.score_thr,
                         full_image=args.full_image, merge=merge)


def output_names(source: str, paths: Sequence[str]) -> List[str]:
    """Output file names: paths relative to a source folder, else base names; two inputs that
    would write the same output are refused before any work."""
    if osp.isdir(source):
        names = [osp.relpath(p, source) for p in paths]
    else:
        names = [osp.basename(p) for p in paths]
    seen = {}
    for path, name in zip(paths, names):
        if name in seen:
            raise ValueError(f'{seen[name]} and {path} would both be written as {name}')
        seen[name] = path
    return names


def read_image(path: str) -> np.ndarray:
    """The file as uint8 grey (H, W), RGB or RGBA; 16-bit images are scaled to 8 bits."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'cannot read image {path}')
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 3:
        cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)
    elif img.ndim == 3 and img.shape[2] == 4:
        cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA, dst=img)
    image_geometry(img)
    return img


def write_rgb(path: str, rgb: np.ndarray, png_compression: int = 0) -> None:
    """Writes an RGB picture; PNG at the given zlib level (0: stored, without filtering)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    params = []
    if path.lower().endswith('.png'):
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
        if png_compression == 0:  # filters only help compression
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f'could not write {path}')


class ImagePrefetcher:
    """Reads the files in order on a background thread, one ahead of the one being used, so
    decoding the next image overlaps inference on the current one (and the first read
    overlaps building the model when created before it)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='read')
        self._next: Optional[Future] = (self._pool.submit(read_image, self.paths[0])
                                        if self.paths else None)

    def __iter__(self):
        try:
            for idx, path in enumerate(self.paths):
                image = self._next.result()
                self._next = (self._pool.submit(read_image, self.paths[idx + 1])
                              if idx + 1 < len(self.paths) else None)
                yield path, image
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class LargeImageRunner:
    """Runs sliced inference on image files and writes the pictures and the COCO JSON.

    Args:
        predictor (BatchPredictor): The model's inference path.
        settings (SliceSettings): Slicing, threshold and merge settings.
        out_dir (str): Output folder.
        debug (bool): Write the slice grid with unmerged boxes. Defaults to False.
        save_patch (bool): Write every slice with its own boxes. Defaults to False.
        show (bool): Show each annotated image. Defaults to False.
        progress (bool): Progress bars over images and slices. Defaults to True.
        png_compression (int): zlib level of written PNGs (0: stored). Defaults to 0.
    """

    def __init__(self, predictor: BatchPredictor, settings: SliceSettings, out_dir: str,
                 debug: bool = False, save_patch: bool = False, show: bool = False,
                 progress: bool = True, png_compression: int = 0) -> None:
        self.predictor = predictor
        self.settings = settings
        self.out_dir = out_dir
        self.debug = debug
        self.save_patch = save_patch
        self.show = show
        self.progress = progress
        self.png_compression = png_compression
        self._writes: List[Future] = []
        self._writer: Optional[ThreadPoolExecutor] = None
        # Wall time of the last run by phase (seconds): waiting for the image reader,
        # sliced inference, drawing, waiting for the picture writer at the end.
        self.timings: Dict[str, float] = {}
        meta = getattr(predictor.model, 'dataset_meta', None) or {}
        num_classes = getattr(predictor.model.bbox_head, 'num_classes', 0)
        self.class_names = list(meta.get('classes') or [str(i) for i in range(num_classes)])
        self.palette = meta.get('palette')

    def _write(self, path: str, rgb: np.ndarray) -> None:
        """Writes on the background writer (during ``run``) or right away."""
        if self._writer is None:
            write_rgb(path, rgb, self.png_compression)
        else:
            self._writes.append(self._writer.submit(write_rgb, path, rgb, self.png_compression))

    def process(self, path: str, image: Optional[np.ndarray] = None,
                name: Optional[str] = None) -> SlicedResult:
        """Sliced inference on one file (``image``: its pixels if already read); writes its
        annotated image as ``<out_dir>/<name>`` (default: the file's name), and the debug
        pictures."""
        image = read_image(path) if image is None else image
        name = name or osp.basename(path)
        height, width, _ = image_geometry(image)
        num_slices = len(slice_windows(height, width,
                                       resolve_patch_size(self.settings, self.predictor),
                                       self.settings.overlap_ratio))
        start = time.perf_counter()
        with tqdm(total=num_slices, desc=osp.basename(path), unit='slice', leave=False,
                  disable=not self.progress) as bar:
            result = sliced_predict(self.predictor, image, self.settings,
                                    keep_slices=self.debug or self.save_patch,
                                    progress=bar.update)
        drawing = time.perf_counter()
        self._add_time('inference', drawing - start)
        rgb = read_window(image, np.array([0, 0, width, height]))
        annotated = draw_detections(rgb, result.detections, self.class_names, self.palette)
        self._write(osp.join(self.out_dir, name), annotated)
        stem = osp.splitext(name)[0]
        if self.debug:
            unmerged = Detections.concat(result.slice_detections)
            grid = draw_windows(draw_detections(rgb, unmerged, self.class_names, self.palette,
                                                captions=False), result.windows)
            self._write(osp.join(self.out_dir, f'{stem}_debug.png'), grid)
        if self.save_patch:
            for idx, (window, dets) in enumerate(zip(result.windows, result.slice_detections)):
                x1, y1 = int(window[0]), int(window[1])
                patch = draw_detections(read_window(image, window), dets.shifted(-x1, -y1),
                                        self.class_names, self.palette)
                self._write(osp.join(self.out_dir, 'patches', stem,
                                     f'{osp.basename(stem)}_{idx:04d}_{x1}_{y1}.png'), patch)
        self._add_time('drawing', time.perf_counter() - drawing)
        if self.show:
            show_image(name, annotated)
        return result

    def _add_time(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds

    def run(self, paths: Sequence[str], names: Optional[Sequence[str]] = None,
            prefetcher: Optional[ImagePrefetcher] = None) -> Dict:
        """Processes every file and writes ``detections.json``; returns its content.

        ``names`` are the output names (and COCO ``file_name``) of the files; their base names
        by default.

        Files are read one ahead and pictures written on background threads (decoding and
        encoding large PNGs overlap inference); everything is written when this returns.
        """
        names = list(names) if names is not None else output_names('', paths)
        os.makedirs(self.out_dir, exist_ok=True)
        prefetcher = prefetcher or ImagePrefetcher(paths)
        images, annotations = [], []
        self.timings = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix='write')
        files = iter(prefetcher)
        try:
            for image_id in tqdm(range(1, len(prefetcher.paths) + 1), desc='images',
                                 unit='image', disable=not self.progress or len(paths) < 2):
                start = time.perf_counter()
                path, image = next(files)
                self._add_time('read_wait', time.perf_counter() - start)
                name = names[image_id - 1]
                result = self.process(path, image, name)
                height, width = result.image_shape
                images.append(dict(id=image_id, file_name=name, width=width, height=height))
                annotations += to_coco_annotations(result.detections, image_id,
                                                   first_id=len(annotations) + 1)
            doc = coco_document(images, annotations, self.class_names)
            with open(osp.join(self.out_dir, 'detections.json'), 'w', encoding='utf-8') as f:
                json.dump(doc, f)
        finally:
            start = time.perf_counter()
            self._writer.shutdown(wait=True)
            self._add_time('write_wait', time.perf_counter() - start)
            self._writer, writes, self._writes = None, self._writes, []
            files.close()  # stops the reader thread
        for write in writes:
            write.result()  # raises what a background write raised
        return doc


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    settings = settings_from_args(args)
    paths = list_images(args.img)
    names = output_names(args.img, paths)
    keep_freed_memory()
    prefetcher = ImagePrefetcher(paths)  # the first image is read while the model is built
    model = build_detector(args.config, args.checkpoint, device=args.device,
                           cfg_options=args.cfg_options, unsafe_load=args.unsafe_load)
    if args.fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn
        model = fuse_conv_bn(model)
    runner = LargeImageRunner(BatchPredictor(model), settings, args.out_dir, debug=args.debug,
                              save_patch=args.save_patch, show=args.show,
                              progress=not args.no_progress,
                              png_compression=args.png_compression)
    doc = runner.run(paths, names, prefetcher)
    print(f'{len(doc["annotations"])} boxes on {len(paths)} image(s) written to {args.out_dir}')
    return doc


if __name__ == '__main__':
    main()

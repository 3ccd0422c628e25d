"""Sliced inference over image files: reading ahead, slicing through the engine, drawing,
writing the pictures and one COCO-style ``detections.json`` (what the large-image tool runs)."""
import json
import os
import os.path as osp
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..engine.slicing import (BatchPredictor, Detections, SlicedResult, SliceSettings,
                              coco_document, draw_detections, draw_windows, image_geometry,
                              read_window, resolve_patch_size, slice_windows, sliced_predict,
                              to_coco_annotations)
from .images import read_image, write_rgb


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
        show (callable, optional): Called with ``(name, annotated RGB image)`` for each
            image (the tools' ``--show``). Defaults to None.
        progress (bool): Progress bars over images and slices. Defaults to True.
        png_compression (int): zlib level of written PNGs (0: stored). Defaults to 0.
    """

    def __init__(self, predictor: BatchPredictor, settings: SliceSettings, out_dir: str,
                 debug: bool = False, save_patch: bool = False,
                 show: Optional[Callable[[str, np.ndarray], Any]] = None,
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
        if self.show is not None:
            self.show(name, annotated)
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

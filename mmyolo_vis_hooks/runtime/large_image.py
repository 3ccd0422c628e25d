"""Sliced inference over image files: reading ahead, slicing through the engine, drawing,
writing the pictures and one COCO-style ``detections.json`` (what the large-image tool runs).

Huge images (more than ``grid.HUGE_IMAGE_PIXELS``, 8192 x 8192) are never held whole: TIFFs
are read window by window (``runtime.tiff``), and the pictures (merged boxes; the debug grid)
are drawn on a downscaled overview, ``<stem>_overview.png``, whose longer side is at most
``grid.OVERVIEW_MAX_SIDE`` (4096) pixels (integer shrink factor). Boxes in
``detections.json`` stay in full-image pixels; a GeoTIFF's are also given in map coordinates
(``tiff.add_map_boxes``).
"""
import json
import os
import os.path as osp
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..engine.slicing import (BatchPredictor, Detections, SlicedResult, SliceSettings,
                              coco_document, draw_detections, draw_windows, image_geometry,
                              read_window, resolve_patch_size, slice_windows, sliced_predict,
                              to_coco_annotations)
from ..engine.slicing.evaluate import (CocoEvaluation, evaluate_coco, match_images,
                                      read_coco_file)
from ..engine.slicing import grid as slicing_grid
from ..engine.slicing.grid import read_picture
from .distributed import DistContext, run_sharded
from .images import close_image, open_image, write_rgb
from .memory import release_freed_memory
from .tiff import add_map_boxes, import_tifffile, is_tiff


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
    overlaps building the model when created before it).

    Files are opened with ``images.open_image``: a TIFF is only opened (its pixels are read
    window by window during inference), any other file is decoded whole. Each image is
    closed when the next one is asked for, or when the iteration ends.

    Raises:
        MissingPackageError: A TIFF among the paths and no tifffile (before any work).
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        if any(is_tiff(p) for p in self.paths):
            import_tifffile()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='read')
        self._next: Optional[Future] = (self._pool.submit(open_image, self.paths[0])
                                        if self.paths else None)

    def __iter__(self) -> Iterator[Tuple[str, Optional[Any], Optional[Exception]]]:
        """Yields ``(path, image, None)``, or ``(path, None, error)`` for a file that could
        not be read (the next files are still read)."""
        try:
            for idx, path in enumerate(self.paths):
                try:
                    image, error = self._next.result(), None
                except Exception as err:  # noqa: B902 reported per image by the caller
                    image, error = None, err
                self._next = (self._pool.submit(open_image, self.paths[idx + 1])
                              if idx + 1 < len(self.paths) else None)
                try:
                    yield path, image, error
                finally:
                    close_image(image)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            pending, self._next = self._next, None
            if pending is not None and not pending.cancelled() and pending.exception() is None:
                close_image(pending.result())  # opened ahead, never used


def image_record(index: int, path: str, name: str, result: Optional[SlicedResult] = None,
                 error: Optional[BaseException] = None) -> Dict:
    """What one image gave, JSON-ready (ranks exchange these): its position ``index`` in the
    input list (image id = index + 1), its merged boxes as COCO annotations (ids are set when
    the document is assembled), the full-image pass's boxes when there was one, or the error
    that stopped it."""
    record = dict(index=int(index), path=path, file_name=name)
    if error is not None:
        return dict(record, error=f'{type(error).__name__}: {error}')
    height, width = result.image_shape
    record.update(width=int(width), height=int(height),
                  annotations=to_coco_annotations(result.detections, index + 1))
    if result.full_image_detections is not None or len(result.windows) == 1:
        # One slice is the whole image (letterboxed the same way): its boxes are the pass's.
        full = (result.full_image_detections if result.full_image_detections is not None
                else result.detections)
        record['full_image'] = to_coco_annotations(full, index + 1)
    return record


def detection_documents(records: Sequence[Dict], class_names: Sequence[str],
                        full_image: bool = False) -> Tuple[Dict, Optional[Dict]]:
    """Assembles the COCO-style documents from image records, in input order (wherever
    they were computed): image id = position + 1, annotation ids numbered in that order.

    Returns:
        tuple[dict, dict | None]: ``detections.json`` (with a ``failed`` list of
        ``file_name``, ``path``, ``error`` when an image failed), and with ``full_image`` the
        same for the full-image pass.
    """
    records = sorted(records, key=lambda r: r['index'])
    images, failed = [], []
    annotations: Dict[str, List[Dict]] = dict(sliced=[], full_image=[])
    for record in records:
        if 'error' in record:
            failed.append({k: record[k] for k in ('file_name', 'path', 'error')})
            continue
        images.append(dict(id=record['index'] + 1, file_name=record['file_name'],
                           width=record['width'], height=record['height']))
        if 'geo' in record:  # a GeoTIFF's georeferencing (runtime.tiff.add_map_boxes)
            images[-1]['geo'] = record['geo']
        for key, anns in (('sliced', record['annotations']),
                          ('full_image', record.get('full_image') or [])):
            start = len(annotations[key]) + 1
            annotations[key] += [dict(ann, id=start + k) for k, ann in enumerate(anns)]
    doc = coco_document(images, annotations['sliced'], class_names)
    if failed:
        doc['failed'] = failed
    full = None
    if full_image:
        full = coco_document(images, annotations['full_image'], class_names)
    return doc, full


def write_documents(out_dir: str, doc: Dict, full: Optional[Dict] = None) -> None:
    """Writes ``detections.json`` (and ``detections_full_image.json``) into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    for name, content in (('detections.json', doc), ('detections_full_image.json', full)):
        if content is not None:
            with open(osp.join(out_dir, name), 'w', encoding='utf-8') as f:
                json.dump(content, f)


class _TrimmingProgress:
    """A slice-progress callback that also hands freed memory back to the OS every
    ``every`` slices (``memory.release_freed_memory``; huge images)."""

    def __init__(self, update: Callable[[int], Any], every: int = 256) -> None:
        self.update, self.every, self.pending = update, every, 0

    def __call__(self, done: int) -> None:
        self.update(done)
        self.pending += done
        if self.pending >= self.every:
            self.pending = 0
            release_freed_memory()


def _shrunk(dets: Detections, factor: int) -> Detections:
    """Boxes in the pixels of a picture shrunk by ``factor``."""
    return dets if factor == 1 else dets.scaled(1 / factor)


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
        catch_errors (bool): An image that cannot be read or fails is recorded with its
            error and the run goes on; False raises it. Defaults to True.
    """

    def __init__(self, predictor: BatchPredictor, settings: SliceSettings, out_dir: str,
                 debug: bool = False, save_patch: bool = False,
                 show: Optional[Callable[[str, np.ndarray], Any]] = None,
                 progress: bool = True, png_compression: int = 0,
                 catch_errors: bool = True) -> None:
        self.predictor = predictor
        self.settings = settings
        self.out_dir = out_dir
        self.debug = debug
        self.save_patch = save_patch
        self.show = show
        self.progress = progress
        self.png_compression = png_compression
        self.catch_errors = catch_errors
        self._writes: List[Future] = []
        self._writer: Optional[ThreadPoolExecutor] = None
        # Wall time of the last run by phase (seconds): waiting for the image reader,
        # sliced inference, drawing, waiting for the picture writer at the end.
        self.timings: Dict[str, float] = {}
        meta = getattr(predictor.model, 'dataset_meta', None) or {}
        self.class_names = predictor.detector.class_names
        self.palette = meta.get('palette')

    def _write(self, path: str, rgb: np.ndarray) -> None:
        """Writes on the background writer (during ``run``) or right away."""
        if self._writer is None:
            write_rgb(path, rgb, self.png_compression)
        else:
            self._writes.append(self._writer.submit(write_rgb, path, rgb, self.png_compression))

    def process(self, path: str, image: Optional[Any] = None,
                name: Optional[str] = None) -> SlicedResult:
        """Sliced inference on one file (``image``: its pixels, or an array-like read window
        by window, if already opened); writes its annotated image as ``<out_dir>/<name>``
        (default: the file's name; a huge image's as ``<stem>_overview.png``), and the debug
        pictures. The progress bar counts slices done / total, whatever the source."""
        if image is not None:
            return self._process(path, image, name)
        image = open_image(path)
        try:
            return self._process(path, image, name)
        finally:
            close_image(image)

    def _process(self, path: str, image: Any, name: Optional[str]) -> SlicedResult:
        name = name or osp.basename(path)
        height, width, _ = image_geometry(image)
        num_slices = len(slice_windows(height, width,
                                       resolve_patch_size(self.settings, self.predictor),
                                       self.settings.overlap_ratio))
        start = time.perf_counter()
        with tqdm(total=num_slices, desc=osp.basename(path), unit='slice', leave=False,
                  disable=not self.progress) as bar:
            progress = bar.update
            if height * width > slicing_grid.HUGE_IMAGE_PIXELS:
                progress = _TrimmingProgress(bar.update)
            result = sliced_predict(self.predictor, image, self.settings,
                                    keep_slices=self.debug or self.save_patch,
                                    progress=progress)
            bar.refresh()  # the final count is drawn even when the last batches came fast
        drawing = time.perf_counter()
        self._add_time('inference', drawing - start)
        stem = osp.splitext(name)[0]
        rgb, factor = read_picture(image)  # huge: an overview 1/factor the size
        if factor > 1:
            name = f'{stem}_overview.png'
        # On an overview objects are a few pixels: thin outlines, no captions (in the JSON).
        overview = dict(captions=False, thickness=1) if factor > 1 else {}
        annotated = draw_detections(rgb, _shrunk(result.detections, factor), self.class_names,
                                    self.palette, **overview)
        self._write(osp.join(self.out_dir, name), annotated)
        if self.debug:
            unmerged = _shrunk(Detections.concat(result.slice_detections), factor)
            grid = draw_windows(draw_detections(rgb, unmerged, self.class_names, self.palette,
                                                captions=False, thickness=overview.get(
                                                    'thickness')), result.windows // factor)
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

    def iter_records(self, paths: Sequence[str], names: Optional[Sequence[str]] = None,
                     indices: Optional[Sequence[int]] = None,
                     prefetcher: Optional[ImagePrefetcher] = None) -> Iterator[Dict]:
        """Processes the files in order and yields one :func:`image_record` per file.

        ``names`` are the output names (and COCO ``file_name``) of the files, their base
        names by default; ``indices`` their positions in the whole input list (a rank's
        share of it), ``0..n-1`` by default.

        Files are read one ahead and pictures written on background threads (decoding and
        encoding large PNGs overlap inference); every picture is written when the iteration
        ends. An image that cannot be read or fails gives a record with its error and the
        next one is processed (``catch_errors=False``: the error is raised).
        """
        names = list(names) if names is not None else output_names('', paths)
        indices = list(indices) if indices is not None else list(range(len(paths)))
        os.makedirs(self.out_dir, exist_ok=True)
        prefetcher = prefetcher or ImagePrefetcher(paths)
        self.timings = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix='write')
        files = iter(prefetcher)
        try:
            for k in tqdm(range(len(prefetcher.paths)), desc='images', unit='image',
                          disable=not self.progress or len(paths) < 2):
                start = time.perf_counter()
                path, image, error = next(files)
                self._add_time('read_wait', time.perf_counter() - start)
                if error is None:
                    try:
                        result = self.process(path, image, names[k])
                    except Exception as err:  # noqa: B902 one image's failure is reported
                        if not self.catch_errors:
                            raise
                        error = err
                    geo = getattr(image, 'geo', None)  # a GeoTIFF's (runtime.tiff)
                    del image
                elif not self.catch_errors:
                    raise error
                record = (image_record(indices[k], path, names[k], result) if error is None
                          else image_record(indices[k], path, names[k], error=error))
                if error is None:
                    add_map_boxes(geo, record, record['annotations'], record.get('full_image'))
                yield record
        finally:
            start = time.perf_counter()
            self._writer.shutdown(wait=True)
            self._add_time('write_wait', time.perf_counter() - start)
            self._writer, writes, self._writes = None, self._writes, []
            files.close()  # stops the reader thread
        for write in writes:
            write.result()  # raises what a background write raised

    def run(self, paths: Sequence[str], names: Optional[Sequence[str]] = None,
            prefetcher: Optional[ImagePrefetcher] = None) -> Dict:
        """Processes every file (:meth:`iter_records`) and writes ``detections.json`` (and
        with ``settings.full_image`` ``detections_full_image.json``); returns its content.
        Images that failed are listed in its ``failed`` entry."""
        doc, full = self.documents(self.iter_records(paths, names, prefetcher=prefetcher))
        write_documents(self.out_dir, doc, full)
        return doc

    def documents(self, records: Iterable[Dict]) -> Tuple[Dict, Optional[Dict]]:
        """:func:`detection_documents` with this runner's classes and settings."""
        return detection_documents(list(records), self.class_names, self.settings.full_image)


def run_job(runner: LargeImageRunner, paths: Sequence[str], names: Sequence[str],
            ctx: Optional[DistContext] = None, prefetcher: Optional[ImagePrefetcher] = None,
            on_failure: Optional[Callable[[Dict], Any]] = None
            ) -> Optional[Tuple[Dict, Optional[Dict]]]:
    """Sliced inference on this rank's share of ``paths`` (all of them in a single process);
    rank 0 assembles and writes ``detections.json`` (and ``detections_full_image.json``)
    holding every image in input order, the same documents whatever the number of ranks.

    Args:
        runner (LargeImageRunner): This rank's runner.
        paths (Sequence[str]): The whole input, sorted.
        names (Sequence[str]): Their output names.
        ctx (DistContext, optional): This rank's place in the job; single-process by
            default.
        prefetcher (ImagePrefetcher, optional): A reader of this rank's share, already
            started. Defaults to None.
        on_failure (callable, optional): Called with the record of each image of this rank
            that failed, as it happens. Defaults to None.

    Returns:
        tuple[dict, dict | None] | None: On rank 0 the documents (see
        :func:`detection_documents`); None on other ranks.
    """
    ctx = ctx or DistContext()

    def records(share: Sequence[int]) -> Iterator[Dict]:
        return runner.iter_records([paths[i] for i in share], [names[i] for i in share],
                                   share, prefetcher)

    gathered = run_sharded(records, paths, names, ctx, on_failure)
    if gathered is None:
        return None
    doc, full = runner.documents(gathered)
    write_documents(runner.out_dir, doc, full)
    return doc, full


def check_ground_truth(ann_file: str, names: Sequence[str]) -> None:
    """Before any work: ``ann_file`` is a COCO annotation file holding at least one of the
    images (output ``names``).

    Raises:
        FileNotFoundError, ValueError: It is not, saying what was found.
    """
    coco = read_coco_file(ann_file)
    pairs, _ = match_images(coco['images'], [dict(id=i, file_name=n)
                                             for i, n in enumerate(names)])
    if not pairs:
        raise ValueError(f'none of the {len(names)} input image(s) is in {ann_file} (file '
                         f'names such as {names[0]!r}; it has e.g. '
                         f'{coco["images"][0]["file_name"] if coco["images"] else "no image"!r})')


def evaluate_documents(ann_file: str, doc: Dict, full: Optional[Dict],
                       class_names: Sequence[str], out_dir: str) -> CocoEvaluation:
    """COCO mAP of the merged boxes (``sliced``) and, when given, of the full-image pass
    (``full image``) against ``ann_file``; written to ``<out_dir>/coco_eval.json``."""
    runs = dict(sliced=doc)
    if full is not None:
        runs['full image'] = full
    evaluation = evaluate_coco(ann_file, runs, class_names)
    with open(osp.join(out_dir, 'coco_eval.json'), 'w', encoding='utf-8') as f:
        json.dump(evaluation.to_dict(), f, indent=1)
    return evaluation

"""Sliced inference on one large image: grid, batches of slices, shift, merge."""
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from ..core.checks import check_int, check_number
from ..core.devices import core_free_beside
from .detections import Detections
from .grid import (check_overlap_ratio, check_patch_size, image_geometry, read_picture,
                   read_window, slice_windows)
from .merge import MergeConfig, check_merge_for, merge_detections
from .predictor import BatchPredictor


@dataclass(frozen=True)
class SliceSettings:
    """What sliced inference does; every value is checked here, before any work.

    Args:
        patch_size (int, optional): Square slice side in pixels; None means the model's input
            size, so slices need no resize. Defaults to None.
        overlap_ratio (float): Overlap of neighbouring slices, in [0, 1). Defaults to 0.25.
        batch_size (int): Slices per forward pass. Defaults to 1.
        score_thr (float): Keep boxes scoring above this, in [0, 1]. Defaults to 0.3.
        full_image (bool): Also run the whole image (letterboxed to the input size) and merge
            its boxes with the slices' (sahi's ``perform_standard_pred``). Defaults to False.
        merge (MergeConfig): How overlapping boxes are merged. Defaults to class-wise NMS at
            IoU 0.25 (MMYOLO's demo).
    """
    patch_size: Optional[int] = None
    overlap_ratio: float = 0.25
    batch_size: int = 1
    score_thr: float = 0.3
    full_image: bool = False
    merge: MergeConfig = field(default_factory=MergeConfig)

    def __post_init__(self):
        if self.patch_size is not None:
            object.__setattr__(self, 'patch_size', check_patch_size(self.patch_size))
        object.__setattr__(self, 'overlap_ratio', check_overlap_ratio(self.overlap_ratio))
        object.__setattr__(self, 'batch_size', check_int('batch size', self.batch_size, low=1))
        object.__setattr__(self, 'score_thr', check_number('score threshold', self.score_thr,
                                                           0, 1))
        if not isinstance(self.merge, MergeConfig):
            raise TypeError(f'merge must be a MergeConfig, got {type(self.merge)}')


@dataclass
class SlicedResult:
    """What sliced inference found on one image.

    Args:
        detections (Detections): Merged boxes in full-image pixels.
        windows (np.ndarray): (N, 4) slice windows [x1, y1, x2, y2].
        image_shape (tuple[int, int]): (height, width).
        slice_detections (list[Detections], optional): Unmerged boxes of each slice, in
            full-image pixels (only when asked for).
        full_image_detections (Detections, optional): Boxes of the full-image pass.
    """
    detections: Detections
    windows: np.ndarray
    image_shape: Tuple[int, int]
    slice_detections: Optional[List[Detections]] = None
    full_image_detections: Optional[Detections] = None


class _InThisThread:
    """``submit`` running the call at once on this thread (``sliced_predict`` in series)."""

    @staticmethod
    def submit(func: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(func(*args))
        except Exception as err:  # noqa: B902 re-raised by result(), as from a pool
            future.set_exception(err)  # (an interrupt propagates at once)
        return future


def resolve_patch_size(settings: SliceSettings, predictor: BatchPredictor) -> int:
    """The patch size to use: the settings' or the model's (square) input size."""
    return settings.patch_size or int(min(predictor.input_size))


def sliced_predict(predictor: BatchPredictor, image: Any, settings: SliceSettings,
                   keep_slices: bool = False,
                   progress: Optional[Callable[[int], Any]] = None,
                   pipelined: Optional[bool] = None) -> SlicedResult:
    """Detects objects on a large image slice by slice.

    Slices are read from ``image`` one batch at a time (a numpy array or memmap of shape
    (H, W[, C]), uint8, grey/RGB/RGBA), so only ``batch_size`` slices are ever converted to
    model input at once.

    Args:
        predictor (BatchPredictor): The model's inference path.
        image (np.ndarray): The image, RGB order for 3/4 channels.
        settings (SliceSettings): Patch size, overlap, batch size, threshold, merge.
        keep_slices (bool): Also return each slice's unmerged boxes. Defaults to False.
        progress (callable, optional): Called with the number of slices done after each batch.
        pipelined (bool, optional): Read and preprocess the next batch and decode the
            previous one on a helper thread while the network runs (the same boxes); False
            runs every step in series on this thread. None: only when a core is free beside
            the model (``core.devices.core_free_beside``: a model on a GPU, or torch on fewer
            threads than usable CPUs), since a helper competing with the forward's own
            threads slows it down. Defaults to None.

    Returns:
        SlicedResult: Merged boxes (and, if asked, the unmerged ones).
    """
    check_merge_for(settings.merge, predictor.detector.box_dim)
    height, width, _ = image_geometry(image)
    windows = slice_windows(height, width, resolve_patch_size(settings, predictor),
                            settings.overlap_ratio)
    # Boxes of all slices as flat arrays (no Detections per slice unless asked for).
    parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    full = None
    starts = range(0, len(windows), settings.batch_size)

    def prepare(start: int) -> Tuple[Any, List[dict]]:
        return predictor.preprocess([read_window(image, window) for window in
                                     windows[start:start + settings.batch_size]])

    def decode(outs: tuple, metas: List[dict], start: int) -> int:
        bboxes, scores, labels, index = predictor.decode_flat(outs, metas, settings.score_thr)
        corners = windows[start:start + settings.batch_size][index, :2]
        # a rotated box moves its centre only
        offsets = np.concatenate([corners, np.zeros_like(corners[:, :1].repeat(3, 1))], 1) \
            if bboxes.shape[1] == 5 else np.tile(corners, 2)
        parts.append((bboxes + offsets.astype(np.float32), scores, labels, index + start))
        return len(metas)

    def finish(decoding: Future) -> None:
        done = decoding.result()  # raises what the helper raised
        if progress is not None:
            progress(done)

    if pipelined is None:
        pipelined = core_free_beside(predictor.device)
    with predictor.guard(), ThreadPoolExecutor(1, thread_name_prefix='slices') as pool:
        helper = pool if pipelined else _InThisThread()
        # A pipeline: while the network runs on batch k (this thread), the helper decodes
        # batch k-1 and reads + preprocesses batch k+1 (both release the GIL for their
        # array work), so only the first preparation and the last decoding stay in series.
        # One worker keeps them in order; results are the same as running them in series.
        upcoming = helper.submit(prepare, starts[0])
        decoding: Optional[Future] = None
        for k, start in enumerate(starts):
            inputs, metas = upcoming.result()
            if k + 1 < len(starts):
                upcoming = helper.submit(prepare, starts[k + 1])
            outs = predictor.forward(inputs)
            del inputs
            if decoding is not None:
                finish(decoding)
            decoding = helper.submit(decode, outs, metas, start)
        finish(decoding)
        if settings.full_image and len(windows) > 1:  # one slice already is the whole image
            whole, factor = read_picture(image)  # a huge image's overview: never read whole
            full = predictor.predict([whole], settings.score_thr)[0]
            if factor > 1:
                full = full.scaled(factor)
    bboxes, scores, labels, slice_index = (np.concatenate(a) for a in zip(*parts))
    everything = Detections(bboxes, scores, labels)
    per_slice = None
    if keep_slices:
        splits = np.searchsorted(slice_index, np.arange(1, len(windows)))
        per_slice = [everything.select(slice(a, b)) for a, b in
                     zip(np.r_[0, splits], np.r_[splits, len(everything)])]
    if full is not None:
        everything = Detections.concat([everything, full])
    merged = merge_detections(everything, settings.merge)
    # soft-NMS lowers scores; the threshold holds for what is returned.
    merged = merged.select(merged.scores > settings.score_thr)
    return SlicedResult(merged, windows, (height, width), per_slice, full)

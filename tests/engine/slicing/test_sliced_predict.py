"""sliced_predict (engine/slicing/sliced.py): slices -> batches -> merged boxes; settings
checked before any work, windows read one batch at a time, grey/RGBA inputs, small and
non-square images, batching and the full-image pass."""
import cv2
import numpy as np
import pytest

from mmyolo_vis_hooks.engine.slicing import (Detections, MergeConfig, SliceSettings,
                                             matched_fraction, merge_detections,
                                             sliced_predict)
from helpers.slicing import LOW_THR
from helpers.slicing import ForwardCounter as _ForwardCounter
from mmyolo_vis_hooks.runtime.images import read_rgb as _rgb
from helpers.slicing import same_detections as _same


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(patch_size=0), ValueError, 'patch size must be a positive'),
    (dict(patch_size=-320), ValueError, 'patch size must be a positive'),
    (dict(patch_size=320.5), TypeError,
     r'patch size must be a positive number of pixels \(an int\)'),
    (dict(overlap_ratio=1.0), ValueError, r'overlap ratio must be a number in \[0, 1\)'),
    (dict(overlap_ratio=-0.1), ValueError, r'overlap ratio must be a number in \[0, 1\)'),
    (dict(batch_size=0), ValueError, 'batch size must be a positive int'),
    (dict(score_thr=1.5), ValueError, r'score threshold must be a number in \[0, 1\]'),
])
def test_bad_settings_raise(kwargs, error, message):
    with pytest.raises(error, match=message):
        SliceSettings(**kwargs)


@pytest.mark.slow  # builds the demo detector
@pytest.mark.parametrize('image, error, message', [
    (np.zeros((50, 60, 2), np.uint8), ValueError, 'C in'),
    (np.zeros((50, 60, 3), np.float32), TypeError, 'must be uint8'),
    (np.zeros((0, 60, 3), np.uint8), ValueError, 'empty'),
    ([[0, 1], [2, 3]], TypeError, 'numpy array'),
])
def test_bad_images_raise_before_inference(predictor, image, error, message):
    counter = _ForwardCounter(predictor.model)
    try:
        with pytest.raises(error, match=message):
            sliced_predict(predictor, image, SliceSettings())
    finally:
        counter.close()
    assert counter.batches == []


@pytest.mark.slow
def test_slices_are_read_one_batch_at_a_time(predictor, small_large_image):
    """An image that cannot be converted whole: only windows are ever read, never the array."""
    img = _rgb(small_large_image[0])

    class WindowOnlyImage:
        shape, dtype = img.shape, img.dtype

        def __init__(self):
            self.reads = []

        def __getitem__(self, key):
            ys, xs = key[:2]
            self.reads.append((ys.stop - ys.start) * (xs.stop - xs.start))
            return img[key]

        def __array__(self, *args, **kwargs):
            raise AssertionError('the whole image was converted')

    lazy = WindowOnlyImage()
    settings = SliceSettings(batch_size=3, score_thr=LOW_THR)
    result = sliced_predict(predictor, lazy, settings)
    assert len(lazy.reads) == len(result.windows) == 12
    assert max(lazy.reads) == 320 * 320
    assert _same(result.detections, sliced_predict(predictor, img, settings).detections)


@pytest.mark.slow
def test_grey_and_rgba_images_equal_their_rgb(predictor, small_large_image):
    rgb = np.ascontiguousarray(_rgb(small_large_image[0])[:480, :560])  # 4 slices
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    settings = SliceSettings(batch_size=4, score_thr=LOW_THR)
    grey_dets = sliced_predict(predictor, grey, settings).detections
    assert len(grey_dets) > 0
    assert _same(grey_dets, sliced_predict(predictor, np.repeat(grey[..., None], 3, 2),
                                           settings).detections)
    assert _same(sliced_predict(predictor, rgba, settings).detections,
                 sliced_predict(predictor, rgb, settings).detections)


@pytest.mark.slow
def test_patch_larger_than_image_and_non_square(predictor, small_large_image):
    rgb = _rgb(small_large_image[0])
    small = np.ascontiguousarray(rgb[:150, :230])
    result = sliced_predict(predictor, small, SliceSettings(score_thr=LOW_THR, full_image=True),
                            keep_slices=True)
    assert result.windows.tolist() == [[0, 0, 230, 150]]
    assert result.full_image_detections is None  # the one slice already is the whole image
    assert _same(result.detections, merge_detections(
        predictor.predict([small], LOW_THR)[0], MergeConfig()))
    assert (result.detections.bboxes[:, [2, 3]] <= [230, 150]).all()
    tall = np.ascontiguousarray(rgb[:700, :200])
    result = sliced_predict(predictor, tall, SliceSettings(score_thr=LOW_THR))
    assert len(result.windows) == 3 and (result.detections.bboxes[:, 2] <= 200).all()


@pytest.mark.slow
def test_batching_and_full_image_pass(model, predictor, small_large_image):
    rgb = _rgb(small_large_image[0])
    counter = _ForwardCounter(model)
    try:
        one = sliced_predict(predictor, rgb, SliceSettings(batch_size=1, score_thr=LOW_THR))
        assert counter.batches == [1] * 12
        counter.batches.clear()
        five = sliced_predict(predictor, rgb, SliceSettings(batch_size=5, score_thr=LOW_THR,
                                                            full_image=True), keep_slices=True)
    finally:
        counter.close()
    assert counter.batches == [5, 5, 2, 1]  # 12 slices in batches of 5, then the full image
    full = five.full_image_detections
    assert full is not None and len(full) > 0
    assert (full.bboxes[:, 2] <= 1000).all() and (full.bboxes[:, 3] <= 700).all()
    slices_only = merge_detections(Detections.concat(five.slice_detections), MergeConfig())
    with_full = merge_detections(Detections.concat(five.slice_detections + [full]),
                                 MergeConfig())
    assert _same(five.detections, with_full) and not _same(five.detections, slices_only)
    # Batched convolutions differ in the last float bits; random-init scores are near ties,
    # so an odd box may swap places at the top-k/NMS cut-off, nothing more.
    assert len(one.detections) > 50
    assert matched_fraction(slices_only, one.detections) >= 0.97
    assert matched_fraction(one.detections, slices_only) >= 0.97


@pytest.mark.slow
def test_pipelined_equals_series_and_reports_on_the_calling_thread(predictor,
                                                                   small_large_image):
    """The helper thread (next batch read + preprocessed, last one decoded while the network
    runs) changes nothing: the same boxes, per slice too, as every step in series; progress
    is reported on the calling thread, batch after batch; the model's mode and grad mode are
    as before."""
    import threading
    import torch
    rgb = _rgb(small_large_image[0])
    settings = SliceSettings(batch_size=5, score_thr=LOW_THR)
    calls = []

    def progress(done):
        calls.append((done, threading.current_thread() is threading.main_thread()))

    predictor.model.train()
    try:
        piped = sliced_predict(predictor, rgb, settings, keep_slices=True, progress=progress,
                               pipelined=True)
        assert predictor.model.training and torch.is_grad_enabled()
    finally:
        predictor.model.eval()
    series = sliced_predict(predictor, rgb, settings, keep_slices=True, pipelined=False)
    assert calls == [(5, True), (5, True), (2, True)]
    assert len(piped.detections) > 50
    assert _same(piped.detections, series.detections)
    for a, b in zip(piped.slice_detections, series.slice_detections):
        assert np.array_equal(a.bboxes, b.bboxes) and np.array_equal(a.scores, b.scores)


@pytest.mark.slow
@pytest.mark.parametrize('pipelined', [True, False])
def test_a_failing_window_read_is_raised(predictor, small_large_image, pipelined):
    """A read that fails in the helper thread reaches the caller as itself, and the run
    stops there (no further forward)."""
    img = _rgb(small_large_image[0])

    class BrokenAfterFirstBatch:
        shape, dtype = img.shape, img.dtype
        reads = 0

        def __getitem__(self, key):
            self.reads += 1
            if self.reads > 3:
                raise OSError('disk gone at window 4')
            return img[key]

    counter = _ForwardCounter(predictor.model)
    try:
        with pytest.raises(OSError, match='disk gone at window 4'):
            sliced_predict(predictor, BrokenAfterFirstBatch(), SliceSettings(batch_size=3),
                           pipelined=pipelined)
    finally:
        counter.close()
    assert counter.batches == [3]  # batch 1 ran; batch 2 never did

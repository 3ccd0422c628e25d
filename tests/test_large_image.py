"""Sliced inference on large images: the engine, the tool end to end, the sahi adapter through
sahi's own API, bad input. Random-init models come from the demo config (saved to a real
checkpoint file); one full-size run uses the trained demo detector.
"""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from conftest import DEMO_CONFIG
from runner_utils import load_tool

from mmyolo_vis_hooks.engine.slicing import (BatchPredictor, Detections, MergeConfig,
                                             SliceSettings, load_coco_ground_truth,
                                             match_detections, matched_fraction,
                                             merge_detections, slice_windows, sliced_predict)

LOW_THR = 0.02  # random-init boxes score low; this keeps plenty of them


tool = load_tool('large_image_infer')


@pytest.fixture(scope='module')
def random_checkpoint(tmp_path_factory):
    """A random-init demo detector saved as a real weights-only checkpoint."""
    from mmyolo_vis_hooks.engine.inference import build_detector
    torch.manual_seed(0)
    model = build_detector(DEMO_CONFIG)
    path = str(tmp_path_factory.mktemp('ckpt') / 'random.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(model.dataset_meta))), path)
    return path


@pytest.fixture(scope='module')
def model(random_checkpoint):
    from mmyolo_vis_hooks.engine.inference import build_detector
    return build_detector(DEMO_CONFIG, random_checkpoint)


@pytest.fixture(scope='module')
def predictor(model):
    return BatchPredictor(model)


@pytest.fixture(scope='module')
def small_large_image(tmp_path_factory):
    """A 1000x700 large-style image (16-40 px shapes) and its ground truth."""
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    root = str(tmp_path_factory.mktemp('small_large'))
    ann = generate_large_image(root, seed=3, width=1000, height=700, num_objects=30)
    return osp.join(root, 'large_00000.png'), ann


def _rgb(path):
    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def _same(a: Detections, b: Detections, atol=1e-3):
    if len(a) != len(b):
        return False
    ka = np.lexsort(np.c_[a.bboxes.round(2), a.scores, a.labels].T)
    kb = np.lexsort(np.c_[b.bboxes.round(2), b.scores, b.labels].T)
    return (np.allclose(a.bboxes[ka], b.bboxes[kb], atol=atol)
            and np.allclose(a.scores[ka], b.scores[kb], atol=1e-4)
            and np.array_equal(a.labels[ka], b.labels[kb]))


class _ForwardCounter:
    """Records the batch size of every backbone call."""

    def __init__(self, model):
        self.batches = []
        self._handle = model.backbone.register_forward_hook(
            lambda mod, args, out: self.batches.append(args[0].shape[0]))

    def close(self):
        self._handle.remove()


# --------------------------------------------------------------------------- grid and inputs


def test_grid_is_sahis_and_covers_the_image():
    from sahi.slicing import slice_image
    windows = slice_windows(2000, 3000, 320, 0.25)
    assert len(windows) == 104  # the embedded image's slice count (ENVIRONMENT.md pitfall 10)
    img = np.zeros((2000, 3000, 3), np.uint8)
    sahi_windows = slice_image(img, slice_height=320, slice_width=320, overlap_height_ratio=0.25,
                               overlap_width_ratio=0.25).starting_pixels
    assert [list(w[:2]) for w in windows] == [list(p) for p in sahi_windows]
    assert (windows[:, 2] - windows[:, 0] == 320).all() and windows[:, 2].max() == 3000
    # a patch larger than the image: one window, the image itself
    assert slice_windows(150, 200, 320, 0.25).tolist() == [[0, 0, 200, 150]]
    # larger than the image in one direction only (non-square image)
    tall = slice_windows(1000, 200, 320, 0.25)
    assert (tall[:, 0] == 0).all() and (tall[:, 2] == 200).all() and tall[-1, 3] == 1000


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(patch_size=0), ValueError, 'patch size must be a positive'),
    (dict(patch_size=-320), ValueError, 'patch size must be a positive'),
    (dict(patch_size=320.5), TypeError, 'patch size must be an int'),
    (dict(overlap_ratio=1.0), ValueError, r'overlap ratio must be in \[0, 1\)'),
    (dict(overlap_ratio=-0.1), ValueError, r'overlap ratio must be in \[0, 1\)'),
    (dict(batch_size=0), ValueError, 'batch size must be an int >= 1'),
    (dict(score_thr=1.5), ValueError, r'score threshold must be a number in \[0, 1\]'),
])
def test_bad_settings_raise(kwargs, error, message):
    with pytest.raises(error, match=message):
        SliceSettings(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(method='wbf'), 'merge method must be one of'),
    (dict(metric='GIOU'), 'merge metric must be one of'),
    (dict(method='soft_nms', metric='IOS'), 'soft_nms matches by IOU only'),
    (dict(threshold=1.2), r'merge threshold must be a number in \[0, 1\]'),
])
def test_bad_merge_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MergeConfig(**kwargs)


@pytest.mark.parametrize('flags, message', [
    (['--patch-size', '0'], 'patch size must be a positive'),
    (['--patch-overlap-ratio', '1'], r'overlap ratio must be in \[0, 1\)'),
    (['--patch-overlap-ratio', '-0.5'], r'overlap ratio must be in \[0, 1\)'),
    (['--batch-size', '0'], 'batch size must be'),
    (['--merge-iou-thr', '2'], 'merge threshold'),
])
def test_tool_rejects_bad_arguments_before_any_work(flags, message, tmp_path):
    """The checkpoint does not exist: the argument error must come first (no model built)."""
    img = tmp_path / 'img.png'
    cv2.imwrite(str(img), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=message):
        tool.main([str(img), DEMO_CONFIG, str(tmp_path / 'missing.pth'), '--out-dir',
                   str(tmp_path / 'out'), *flags])
    assert not (tmp_path / 'out').exists()


def test_tool_rejects_missing_image_empty_folder_and_clashing_names(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        tool.main([str(tmp_path / 'nope.png'), DEMO_CONFIG, 'x.pth'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images'):
        tool.main([str(tmp_path / 'empty'), DEMO_CONFIG, 'x.pth'])
    for sub in ('a', 'b'):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / 'same.png'), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / 'list.txt').write_text('a/same.png\nb/same.png\n')
    with pytest.raises(ValueError, match='would both be written as same.png'):
        tool.main([str(tmp_path / 'list.txt'), DEMO_CONFIG, 'x.pth'])


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


# --------------------------------------------------------------------------- inference path


@pytest.mark.parametrize('size', [320, 500])
def test_preprocess_is_the_data_preprocessor_on_the_test_pipeline(model, predictor,
                                                                   small_large_image, size):
    """Our batch == the model's data preprocessor on each slice run through the config's
    full test pipeline (as mmdet's inference_detector builds it): bit for bit, both for slices
    at the input size (fast route) and for slices the letterbox resizes (exact route)."""
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope
    img = _rgb(small_large_image[0])
    crops = [np.ascontiguousarray(img[:size, :size]),
             np.ascontiguousarray(img[100:100 + size, 400:400 + size])]
    inputs, metas = predictor.preprocess(crops)
    init_default_scope('mmyolo')
    pipeline_cfg = [dict(type='mmdet.LoadImageFromNDArray')] + [
        t for t in model.cfg.test_dataloader.dataset.pipeline[1:]]
    pipeline = Compose(pipeline_cfg)
    packed = [pipeline(dict(img=c[..., ::-1].copy(), img_id=i)) for i, c in enumerate(crops)]
    ref = model.data_preprocessor(dict(inputs=[p['inputs'] for p in packed],
                                       data_samples=[p['data_samples'] for p in packed]), False)
    assert inputs.shape == (2, 3, 320, 320) and torch.equal(inputs, ref['inputs'])
    for meta, sample in zip(metas, ref['data_samples']):
        assert meta['scale_factor'] == pytest.approx(tuple(sample.scale_factor))
        assert np.array_equal(meta['pad_param'], sample.pad_param)
        assert meta['img_shape'] == tuple(sample.img_shape[:2])
        assert meta['ori_shape'] == tuple(sample.ori_shape)


@pytest.mark.parametrize('size', [320, 500, 200])
def test_batched_predictions_match_mmdet_inference(model, predictor, small_large_image, size):
    """One batched forward == mmdet's inference_detector image by image, for slices at the
    input size (no resize) and letterboxed down (500) or padded (200)."""
    from mmdet.apis import inference_detector
    from mmengine.registry import init_default_scope
    img = _rgb(small_large_image[0])
    crops = [np.ascontiguousarray(img[y:y + size, x:x + size]) for x, y in [(0, 0), (480, 300)]]
    counter = _ForwardCounter(model)
    try:
        ours = predictor.predict(crops, score_thr=LOW_THR)
    finally:
        counter.close()
    assert counter.batches == [2]
    init_default_scope('mmyolo')  # the autouse fixture cleared it; inference_detector needs it
    refs = inference_detector(model, [c[..., ::-1].copy() for c in crops])
    for det, ref in zip(ours, refs):
        keep = ref.pred_instances.scores > LOW_THR
        expected = Detections(ref.pred_instances.bboxes[keep].numpy(),
                              ref.pred_instances.scores[keep].numpy(),
                              ref.pred_instances.labels[keep].numpy())
        assert len(det) > 0 and _same(det, expected)
        assert det.bboxes.min() >= 0 and det.bboxes[:, 2].max() <= size


def test_inference_leaves_the_model_as_it_was(model, predictor, small_large_image):
    model.train()
    try:
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        stats = bn.running_mean.clone()
        predictor.predict([_rgb(small_large_image[0])[:320, :320]], LOW_THR)
        assert all(m.training for m in model.modules())
        assert torch.equal(bn.running_mean, stats)  # eval-mode BN during inference
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


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


# --------------------------------------------------------------------------- merging


def _random_dets(rng, n=60, classes=3):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(10, 40, (n, 2))
    return Detections(np.c_[xy, xy + wh], rng.uniform(0.3, 1, n), rng.integers(0, classes, n))


@pytest.mark.parametrize('method', ['nms', 'nmm', 'greedynmm'])
@pytest.mark.parametrize('metric', ['IOU', 'IOS'])
@pytest.mark.parametrize('agnostic', [False, True])
def test_merge_equals_sahi_postprocess(method, metric, agnostic):
    from sahi.predict import POSTPROCESS_NAME_TO_CLASS
    from sahi.prediction import ObjectPrediction
    dets = _random_dets(np.random.default_rng(1))
    merge = MergeConfig(method, metric, 0.3, agnostic)
    preds = [ObjectPrediction(bbox=b.tolist(), category_id=int(lab), category_name=str(lab),
                              score=float(s)) for b, s, lab in zip(dets.bboxes, dets.scores,
                                                                   dets.labels)]
    post = POSTPROCESS_NAME_TO_CLASS[merge.sahi_postprocess_type](
        match_threshold=0.3, match_metric=metric, class_agnostic=agnostic)(preds)
    expected = Detections(np.array([p.bbox.to_xyxy() for p in post]),
                          np.array([p.score.value for p in post]),
                          np.array([p.category.id for p in post]))
    ours = merge_detections(dets, merge)
    assert 0 < len(ours) < len(dets)
    assert _same(ours, expected, atol=1e-4)


def test_class_agnostic_merge_keeps_one_box_per_object():
    box = [100, 100, 130, 128]
    dets = Detections([box, [101, 99, 131, 128], [99, 101, 129, 129], [300, 300, 320, 320]],
                      [0.9, 0.6, 0.5, 0.8], [1, 2, 0, 1])
    classwise = merge_detections(dets, MergeConfig('nms', 'IOU', 0.25, class_agnostic=False))
    agnostic = merge_detections(dets, MergeConfig('nms', 'IOU', 0.25, class_agnostic=True))
    assert len(classwise) == 4  # the same shape three times, under three labels
    assert len(agnostic) == 2 and agnostic.labels.tolist() == [1, 1]
    merged = merge_detections(dets, MergeConfig('greedynmm', 'IOS', 0.5, class_agnostic=True))
    assert merged.bboxes[0].tolist() == [99, 99, 131, 129] and merged.labels[0] == 1


def test_soft_nms_decays_overlapping_boxes():
    dets = Detections([[0, 0, 30, 30], [1, 1, 31, 31], [100, 100, 120, 120]], [0.9, 0.8, 0.7],
                      [0, 0, 1])
    out = merge_detections(dets, MergeConfig('soft_nms', 'IOU', 0.3))
    assert len(out) == 3 and out.scores[0] == pytest.approx(0.9)
    decayed = out.scores[np.argmin(np.abs(out.bboxes[:, 0] - 1))]
    assert decayed < 0.8 * 0.2  # linear decay by (1 - IoU), IoU ~0.88
    assert merge_detections(Detections.empty(), MergeConfig('soft_nms')).bboxes.shape == (0, 4)


# --------------------------------------------------------------------------- the tool


def test_tool_end_to_end(random_checkpoint, small_large_image, tmp_path):
    img_path, _ = small_large_image
    out = tmp_path / 'out'
    doc = tool.main([img_path, DEMO_CONFIG, random_checkpoint, '--out-dir', str(out),
                     '--score-thr', str(LOW_THR), '--batch-size', '4', '--debug',
                     '--save-patch', '--class-agnostic', '--merge-nms-type', 'greedynmm',
                     '--merge-metric', 'IOS', '--no-progress'])
    assert json.loads((out / 'detections.json').read_text()) == doc
    assert doc['images'] == [dict(id=1, file_name='large_00000.png', width=1000, height=700)]
    assert [c['name'] for c in doc['categories']] == ['circle', 'square', 'triangle']
    anns = doc['annotations']
    assert len(anns) > 0 and {a['category_id'] for a in anns} <= {1, 2, 3}
    assert all(0 <= a['bbox'][0] and a['bbox'][0] + a['bbox'][2] <= 1000.01 for a in anns)
    original = cv2.imread(img_path)
    annotated = cv2.imread(str(out / 'large_00000.png'))
    debug = cv2.imread(str(out / 'large_00000_debug.png'))
    assert annotated.shape == debug.shape == original.shape
    assert (annotated != original).any(axis=2).mean() > 0.01  # boxes drawn
    assert (debug != annotated).any()  # grid and unmerged boxes differ from the merged picture
    patches = sorted((out / 'patches' / 'large_00000').glob('*.png'))
    assert len(patches) == 12 and cv2.imread(str(patches[0])).shape == (320, 320, 3)


def test_tool_on_a_folder_with_grey_rgba_and_no_detections(random_checkpoint, tmp_path,
                                                           small_large_image, monkeypatch,
                                                           capsys):
    """Score threshold 1: no box in any slice (MMYOLO's demo crashes there); grey and RGBA
    files; progress bars over images and slices; --show without a display only says so."""
    folder = tmp_path / 'imgs'
    folder.mkdir()
    bgr = cv2.imread(small_large_image[0])
    cv2.imwrite(str(folder / 'a_grey.png'), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:400, :500])
    cv2.imwrite(str(folder / 'b_rgba.png'), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)[:300, :700])
    monkeypatch.delenv('DISPLAY', raising=False)
    doc = tool.main([str(folder), DEMO_CONFIG, random_checkpoint, '--out-dir',
                     str(tmp_path / 'out'), '--score-thr', '1', '--show'])
    assert doc['annotations'] == []
    err = capsys.readouterr().err
    assert 'images: 100%' in err and '2/2' in err  # the bar over images
    assert 'a_grey.png' in err and 'slice' in err  # the bar over one image's slices
    assert 'no display' in err
    assert [(i['file_name'], i['width'], i['height']) for i in doc['images']] == [
        ('a_grey.png', 500, 400), ('b_rgba.png', 700, 300)]
    assert cv2.imread(str(tmp_path / 'out' / 'a_grey.png')).shape == (400, 500, 3)
    assert (tmp_path / 'out' / 'b_rgba.png').exists()


def test_tool_options_reach_the_model(random_checkpoint, small_large_image, tmp_path):
    """--cfg-options reaches the built model; --fuse-conv-bn keeps the boxes."""
    img_path = str(tmp_path / 'crop.png')
    cv2.imwrite(img_path, cv2.imread(small_large_image[0])[:560, :560])  # 4 slices
    common = [img_path, DEMO_CONFIG, random_checkpoint, '--score-thr', str(LOW_THR),
              '--no-progress', '--batch-size', '4']
    plain = tool.main(common + ['--out-dir', str(tmp_path / 'plain')])['annotations']
    fused = tool.main(common + ['--out-dir', str(tmp_path / 'fused'),
                                '--fuse-conv-bn'])['annotations']
    capped = tool.main(common + ['--out-dir', str(tmp_path / 'capped'), '--cfg-options',
                                 'model.test_cfg.max_per_img=2'])['annotations']

    def dets(anns):
        return Detections([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                            a['bbox'][1] + a['bbox'][3]] for a in anns],
                          [a['score'] for a in anns], [a['category_id'] - 1 for a in anns])

    assert len(plain) > 8
    assert matched_fraction(dets(plain), dets(fused)) >= 0.97
    assert matched_fraction(dets(fused), dets(plain)) >= 0.97
    assert 0 < len(capped) <= 2 * 4  # at most 2 boxes from each of the 4 slices


def test_tool_loads_pickled_objects_only_with_unsafe_load(random_checkpoint, tmp_path):
    from argparse import Namespace

    from mmyolo_vis_hooks.engine.checkpoint import UnsafeCheckpointError
    ckpt = torch.load(random_checkpoint, weights_only=True)
    ckpt['meta']['args'] = Namespace(note='not on the allow-list')
    path = str(tmp_path / 'pickled.pth')
    torch.save(ckpt, path)
    img = str(tmp_path / 'img.png')
    cv2.imwrite(img, np.zeros((64, 80, 3), np.uint8))
    argv = [img, DEMO_CONFIG, path, '--out-dir', str(tmp_path / 'out'), '--no-progress']
    with pytest.raises(UnsafeCheckpointError, match='--unsafe-load'):
        tool.main(argv)
    with pytest.warns(UserWarning, match='code inside the file runs'):
        doc = tool.main(argv + ['--unsafe-load'])
    assert doc['images'][0]['width'] == 80


# --------------------------------------------------------------------------- sahi adapter


def test_adapter_through_sahis_own_api(random_checkpoint, predictor, small_large_image):
    """sahi's get_sliced_prediction with the adapter (built from config + checkpoint):
    batched (one forward per sahi batch), and the same boxes as our engine."""
    from sahi.predict import get_prediction, get_sliced_prediction

    from mmyolo_vis_hooks.sahi_adapter import MMYOLODetectionModel
    adapter = MMYOLODetectionModel(config_path=DEMO_CONFIG, model_path=random_checkpoint,
                                   device='cpu', confidence_threshold=LOW_THR)
    assert adapter.category_mapping == {'0': 'circle', '1': 'square', '2': 'triangle'}
    img_path, _ = small_large_image
    counter = _ForwardCounter(adapter.model)
    try:
        result = get_sliced_prediction(
            img_path, adapter, slice_height=320, slice_width=320, overlap_height_ratio=0.25,
            overlap_width_ratio=0.25, perform_standard_pred=False, postprocess_type='NMS',
            postprocess_match_metric='IOU', postprocess_match_threshold=0.25,
            postprocess_class_agnostic=True, batch_size=4, verbose=0)
    finally:
        counter.close()
    assert counter.batches == [4, 4, 4]
    sahi_dets = Detections([p.bbox.to_xyxy() for p in result.object_prediction_list],
                           [p.score.value for p in result.object_prediction_list],
                           [p.category.id for p in result.object_prediction_list])
    ours = sliced_predict(predictor, _rgb(img_path), SliceSettings(
        batch_size=4, score_thr=LOW_THR, merge=MergeConfig(class_agnostic=True))).detections
    assert len(ours) > 0 and _same(ours, sahi_dets)
    names = {p.category.name for p in result.object_prediction_list}
    assert names <= {'circle', 'square', 'triangle'}
    single = get_prediction(_rgb(img_path)[:320, :320], adapter, confidence_threshold=0.5)
    assert all(p.score.value > 0.5 for p in single.object_prediction_list)
    assert adapter.confidence_threshold == LOW_THR  # sahi's per-call override is restored


def test_mmdet_wrapper_of_sahi_fails_on_mmyolo_configs(random_checkpoint):
    """Why the adapter exists (ENVIRONMENT.md pitfall 9); if sahi fixes this, revisit."""
    from sahi import AutoDetectionModel
    with pytest.raises(ValueError, match='Resize is not found'):
        AutoDetectionModel.from_pretrained(model_type='mmdet', model_path=random_checkpoint,
                                           config_path=DEMO_CONFIG, device='cpu')


# --------------------------------------------------------------------------- trained model


def test_trained_model_on_the_full_size_large_image(demo_checkpoint, tmp_path):
    """The embedded 3000x2000 image, 104 slices: sliced inference finds the small shapes."""
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    ann = generate_large_image(str(tmp_path / 'large'), seed=0)
    img_path = str(tmp_path / 'large' / 'large_00000.png')
    doc = tool.main([img_path, DEMO_CONFIG, demo_checkpoint, '--out-dir', str(tmp_path / 'out'),
                     '--class-agnostic', '--no-progress'])
    anns = doc['annotations']
    dets = Detections([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                        a['bbox'][1] + a['bbox'][3]] for a in anns],
                      [a['score'] for a in anns], [a['category_id'] - 1 for a in anns])
    gt_boxes, gt_labels = load_coco_ground_truth(ann, 'large_00000.png',
                                                 ['circle', 'square', 'triangle'])
    stats = match_detections(dets, gt_boxes, gt_labels)
    assert len(gt_boxes) == 150
    assert stats.recall >= 0.93 and stats.precision >= 0.85, stats


@pytest.mark.parametrize('family', ['yolov5', 'yolov6', 'yolox', 'rtmdet', 'yolov7', 'yolov8',
                                    'ppyoloe'])
def test_channels_last_inputs_give_the_standard_outputs(family, small_large_image):
    """The CPU default (channels-last inputs) changes float rounding only, for every MMYOLO
    family, and leaves the parameters' own layout alone. (Decoding them is compared with
    mmdet's standard-layout inference in test_batched_predictions_match_mmdet_inference.)"""
    from test_cam_engine import random_model
    model = random_model(family)
    img = _rgb(small_large_image[0])
    standard = BatchPredictor(model, channels_last=False)
    fast = BatchPredictor(model)
    size = fast.input_size[0]
    crops = [np.ascontiguousarray(img[:size, :size]),
             np.ascontiguousarray(img[50:50 + size, 300:300 + size])]
    x_std, _ = standard.preprocess(crops)
    x_cl, _ = fast.preprocess(crops)
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    assert x_std.is_contiguous() and torch.equal(x_std, x_cl)
    outs_std = torch.utils._pytree.tree_leaves(standard.forward(x_std))
    outs_cl = torch.utils._pytree.tree_leaves(fast.forward(x_cl))
    assert len(outs_std) == len(outs_cl) > 0
    for a, b in zip(outs_std, outs_cl):
        # Float rounding of differently ordered sums, amplified by these random heads (most by
        # YOLOv8's distribution integral: 2e-3 of 15 stride units): within 1e-3 of the scale.
        assert (a - b).abs().max() <= 1e-3 * a.abs().max(), (family, (a - b).abs().max())
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize('family', ['rtmdet', 'yolov5'])
def test_fast_route_is_the_data_preprocessor_bit_for_bit(family, small_large_image):
    """Slices at the input size skip the transforms and are normalised in one pass: equal to
    the model's own data preprocessor, with RTMDet's per-channel mean/std and BGR input
    (bgr_to_rgb=False) as well as YOLOv5's RGB /255."""
    from test_cam_engine import random_model
    model = random_model(family)
    predictor = BatchPredictor(model)
    size = predictor.input_size[0]
    img = _rgb(small_large_image[0])
    crops = [np.ascontiguousarray(img[:size, :size]),
             np.ascontiguousarray(img[60:60 + size, 200:200 + size])]
    assert predictor._meta_if_untouched(crops[0].shape) is not None  # the fast route is taken
    ours, _ = predictor.preprocess(crops)
    bgr = [torch.from_numpy(np.ascontiguousarray(c[..., ::-1].transpose(2, 0, 1))) for c in crops]
    with torch.no_grad():
        ref = model.data_preprocessor(dict(inputs=bgr, data_samples=None), False)['inputs']
    assert ours.shape == ref.shape and torch.equal(ours, ref)

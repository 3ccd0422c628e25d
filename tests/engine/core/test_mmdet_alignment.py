"""Alignment of MMDetection's test-time geometry, with MMDetection's own transforms and data
preprocessor (no model): the packaged test pipeline's ``Resize(keep_ratio=True)`` (in both align
modes: the resize-only variant of a pipeline that does not letterbox is the pipeline itself),
then the batch padding to the largest image and to ``pad_size_divisor``, at the bottom and
right. The network input itself (stride 1) carried back onto each original image must give the
image's own pixels.

The images (tests/helpers/mmdet_models.py) are affine between known kinks, so bilinear resizing and
sampling reproduce them up to uint8 rounding, and steep enough that half an input pixel off
misses by more than the tolerance.
"""
import mmcv
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from helpers import mmdet_config
from helpers.mmdet_models import (IMAGE_SIZES, KINDS, SCALE, affine_mask, small_kind_cfg,
                                  wave_image, write_wave_dataset)
from mmyolo_vis_hooks.engine.core.geometry import map_to_original, stretch_to_original
from mmyolo_vis_hooks.engine.core.pipeline import letterboxes, resize_only_pipeline, transform_type
from mmyolo_vis_hooks.engine.core.pipeline import \
    test_pipeline_cfg as packaged_test_pipeline  # not a test: renamed for pytest

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
# uint8 rounding of the image and of the resized input: at most 1 grey level in all.
TOLERANCE = 1.0


def _aligned_errors(inputs, meta, original_bgr):
    """Max |aligned - original| over the affine parts of red (along x) and green (along y)."""
    mean = torch.tensor(MEAN)[:, None, None]
    std = torch.tensor(STD)[:, None, None]
    aligned = map_to_original(inputs, meta) * std + mean  # RGB grey levels
    height, width = original_bgr.shape[:2]
    assert aligned.shape == (3, height, width)
    red = (aligned[0] - torch.from_numpy(original_bgr[..., 2]).float())[:, affine_mask(width)]
    green = (aligned[1] - torch.from_numpy(original_bgr[..., 1]).float())[affine_mask(height)]
    return red.abs().max().item(), green.abs().max().item()


def _batch(tmp_path, align, divisor):
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    dataset = write_wave_dataset(str(tmp_path))
    steps = [s for s in packaged_test_pipeline(small_kind_cfg('retinanet'))
             if s['type'] != 'LoadAnnotations']
    if align == 'resize':
        steps = resize_only_pipeline(steps)
    pipeline = Compose(steps)
    items = [pipeline(dict(img_path=f'{tmp_path}/images/{name}', img_id=i))
             for i, name in enumerate(dataset['images'])]
    preprocessor = MODELS.build(dict(type='DetDataPreprocessor', mean=MEAN, std=STD,
                                     bgr_to_rgb=True, pad_size_divisor=divisor))
    return preprocessor(pseudo_collate(items), False)


@pytest.mark.parametrize('divisor', [32, 1])
@pytest.mark.parametrize('align', ['letterbox', 'resize'])
def test_keep_ratio_resize_and_batch_padding_invert_exactly(tmp_path, align, divisor):
    data = _batch(tmp_path, align, divisor)
    inputs, samples = data['inputs'], data['data_samples']
    for index, ((width, height), sample) in enumerate(zip(IMAGE_SIZES, samples)):
        meta = sample.metainfo
        original = wave_image(width, height)
        content_h, content_w = meta['img_shape']
        # MMDetection's keep-ratio rule (scale bounds the long and the short side) in both
        # modes: its test pipeline does not letterbox, so the resize-only variant is itself.
        assert (content_w, content_h) == mmcv.rescale_size((width, height), SCALE)
        assert meta['scale_factor'] == (content_w / width, content_h / height)
        # Padded at the bottom/right by the batch (largest image, divisor): zeros after the
        # normalisation, which a naive stretch would smear over the image.
        assert meta['batch_input_shape'] == tuple(inputs.shape[-2:])
        assert inputs.shape[-2] % divisor == 0 and inputs.shape[-1] % divisor == 0
        red, green = _aligned_errors(inputs[index], meta, original)
        assert red <= TOLERANCE and green <= TOLERANCE, (index, red, green)
        # The check can fail: half an input pixel off, or stretched over the padding.
        shifted = dict(meta, pad_param=np.array([0.5, 0., 0.5, 0.]))
        assert min(_aligned_errors(inputs[index], shifted, original)) > 3 * TOLERANCE
        padded = tuple(inputs.shape[-2:]) != (content_h, content_w)
        if padded:
            stretched = stretch_to_original(inputs[index], meta)
            mean = torch.tensor(MEAN)[:, None, None]
            std = torch.tensor(STD)[:, None, None]
            error = (stretched * std + mean)[:2] - torch.from_numpy(
                np.ascontiguousarray(original[..., [2, 1]].transpose(2, 0, 1))).float()
            assert error.abs().max().item() > 50
    # The two aspects: one image is padded at the bottom, the other at the right.
    shapes = [s.metainfo['img_shape'] for s in samples]
    assert shapes[0][0] < inputs.shape[-2] and shapes[1][1] < inputs.shape[-1]


def test_wave_images_are_what_the_checks_assume():
    """Red varies along x only, green along y only, both reach 0 and 255, and the ramps rise
    by 10 levels or more per pixel (half an input pixel off misses by 4 or more)."""
    img = wave_image(*IMAGE_SIZES[0])
    assert (img[..., 2] == img[:1, :, 2]).all() and (img[..., 1] == img[:, :1, 1]).all()
    assert img[..., 2].min() == 0 and img[..., 2].max() == 255 and (img[..., 0] == 0).all()
    assert np.abs(np.diff(img[0, :, 2].astype(np.int32))).max() >= 10


def test_resize_only_variant_of_mmdetection_pipelines_is_the_pipeline():
    """MMDetection's test pipeline has no fixed input size to stretch into (keep-ratio resize,
    padding only to a divisor): ``align='resize'`` runs it as it is. A keep-ratio resize
    followed by a pad to a fixed size (YOLOX) is a letterbox and is still replaced."""
    steps = packaged_test_pipeline(Config.fromfile(mmdet_config(KINDS['faster_rcnn'])))
    assert [transform_type(s) for s in steps] == ['LoadImageFromFile', 'Resize',
                                                  'LoadAnnotations', 'PackDetInputs']
    assert not letterboxes(steps)
    assert resize_only_pipeline(steps) == steps
    smaller = resize_only_pipeline(steps, (96, 64))
    assert smaller[1] == dict(steps[1], scale=(96, 64)) and smaller[1]['keep_ratio']
    with_divisor = [*steps[:2], dict(type='Pad', size_divisor=32), *steps[2:]]
    assert not letterboxes(with_divisor) and resize_only_pipeline(with_divisor) == with_divisor
    for pad in (dict(type='Pad', pad_to_square=True), dict(type='Pad', size=(640, 640))):
        yolox = [*steps[:2], pad, *steps[2:]]
        assert letterboxes(yolox)
        resized = resize_only_pipeline(yolox)
        assert [transform_type(s) for s in resized] == ['LoadImageFromFile', 'Resize',
                                                        'LoadAnnotations', 'PackDetInputs']
        assert resized[1]['keep_ratio'] is False

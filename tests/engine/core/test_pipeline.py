"""Test pipelines of every MMYOLO family (packaged configs, no model built): the input scale,
and the resize-only variant of ``align='resize'`` with the pipeline's own interpolation."""
import copy

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import packaged_config
from helpers.mmyolo_models import FAMILIES
from mmyolo_vis_hooks.engine.core.pipeline import LETTERBOX_TRANSFORMS, input_scale
from mmyolo_vis_hooks.engine.core.pipeline import resize_only_pipeline, transform_type
from mmyolo_vis_hooks.engine.core.pipeline import \
    test_pipeline_cfg as packaged_test_pipeline  # not a test: renamed for pytest

# The smallest variant of each family (tests/helpers/mmyolo_models.py).
FAMILY_CONFIGS = FAMILIES
# What replaces the letterbox steps: YOLOv5KeepRatioResize (YOLOv5/v6/v7/v8, RTMDet) chooses
# 'area' or 'bilinear' per image (YOLOv5StretchResize does the same), PPYOLOE's FixShapeResize
# is bicubic, YOLOX's mmdet.Resize keeps mmdet's default (bilinear).
EXPECTED_RESIZE = {
    'yolov5': ('YOLOv5StretchResize', None),
    'yolov6': ('YOLOv5StretchResize', None),
    'yolov7': ('YOLOv5StretchResize', None),
    'yolov8': ('YOLOv5StretchResize', None),
    'yolox': ('Resize', None),
    'rtmdet': ('YOLOv5StretchResize', None),
    'ppyoloe': ('Resize', 'bicubic'),
}


def family_test_pipeline(family):
    """The family's packaged test pipeline without annotation loading (images only), and the
    config's own test scale (w, h): ``test_img_scale`` where defined (YOLOX-tiny: 416), else
    ``img_scale``."""
    cfg = Config.fromfile(packaged_config(FAMILY_CONFIGS[family]))
    steps = [s for s in packaged_test_pipeline(cfg) if transform_type(s) != 'LoadAnnotations']
    return steps, tuple(cfg.get('test_img_scale', cfg.img_scale))


def run_pipeline(steps, image_path):
    init_default_scope('mmyolo')
    return Compose(copy.deepcopy(steps))(dict(img_path=image_path, img_id=0))


def textured_image(path, width, height):
    """Random noise blurred a little: every interpolation gives different pixels on it."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (3, 3), 0)
    cv2.imwrite(path, img)
    return path


@pytest.mark.parametrize('family', list(FAMILY_CONFIGS))
def test_input_scale_of_every_family(family):
    pipeline, img_scale = family_test_pipeline(family)
    assert input_scale(pipeline) == img_scale


@pytest.mark.parametrize('family', list(FAMILY_CONFIGS))
def test_resize_only_pipeline_replaces_every_letterbox_step(family):
    pipeline, img_scale = family_test_pipeline(family)
    original = copy.deepcopy(pipeline)
    resized = resize_only_pipeline(pipeline)
    assert pipeline == original  # the given pipeline is untouched
    kinds = [transform_type(s) for s in resized]
    assert not set(kinds) & set(LETTERBOX_TRANSFORMS), kinds
    (step, ) = [s for s in resized if 'Resize' in transform_type(s)]
    kind, interpolation = EXPECTED_RESIZE[family]
    assert transform_type(step) == kind
    assert step.get('interpolation') == interpolation
    assert tuple(step['scale']) == img_scale
    assert step.get('keep_ratio', False) is False
    pack = next(s for s in resized if transform_type(s) == 'PackDetInputs')
    assert 'scale_factor' in pack['meta_keys'] and 'pad_param' not in pack['meta_keys']
    # The scale can be given explicitly (a smaller input than the config's).
    assert tuple(next(s for s in resize_only_pipeline(pipeline, (96, 64))
                      if 'Resize' in transform_type(s))['scale']) == (96, 64)


@pytest.mark.parametrize('family', list(FAMILY_CONFIGS))
@pytest.mark.parametrize('side', [1280, 320], ids=['shrink', 'enlarge'])
def test_resize_only_pipeline_keeps_the_interpolation(tmp_path, family, side):
    """On an image with the input's aspect, letterboxing neither pads nor distorts: the two
    pipelines must then give the same input tensor, bit for bit, which they do only with the
    same interpolation (shrinking and enlarging: the YOLOv5 family uses 'area' for one and
    'bilinear' for the other)."""
    pipeline, (width, height) = family_test_pipeline(family)
    image = textured_image(str(tmp_path / 'image.png'), side * width // height, side)
    letterboxed = run_pipeline(pipeline, image)
    resized = run_pipeline(resize_only_pipeline(pipeline), image)
    assert letterboxed['inputs'].shape == (3, height, width)
    assert torch.equal(letterboxed['inputs'], resized['inputs'])


@pytest.mark.parametrize('family', list(FAMILY_CONFIGS))
def test_resize_only_pipeline_stretches_without_padding(tmp_path, family):
    """A 2:1 image: the letterbox pads it, the resize-only variant fills the input, and its
    metadata carries the per-axis scale and no padding."""
    image = textured_image(str(tmp_path / 'wide.png'), 400, 200)
    pipeline, (width, height) = family_test_pipeline(family)
    letterboxed = run_pipeline(pipeline, image)
    resized = run_pipeline(resize_only_pipeline(pipeline), image)
    meta = resized['data_samples'].metainfo
    assert resized['inputs'].shape == (3, height, width)
    assert tuple(meta['img_shape'][:2]) == (height, width)
    assert np.allclose(meta['scale_factor'], (width / 400, height / 200))
    assert 'pad_param' not in meta
    if family == 'ppyoloe':  # its test pipeline stretches already (FixShapeResize)
        assert torch.equal(letterboxed['inputs'], resized['inputs'])
        return
    # The letterboxed input is padded: its bottom rows (YOLOX pads bottom/right, the others
    # top and bottom) are one flat colour.
    assert letterboxed['inputs'][:, -100:].float().std() == 0
    assert resized['inputs'][:, -100:].float().std() > 0


def test_input_scale_and_errors():
    assert input_scale([dict(type='mmdet.FixShapeResize', width=96, height=64)]) == (96, 64)
    assert input_scale([dict(type='LetterResize', scale=320)]) == (320, 320)
    assert input_scale([dict(type='LoadImageFromFile')]) is None
    with pytest.raises(ValueError, match='cannot find the input scale in the pipeline'):
        resize_only_pipeline([dict(type='LoadImageFromFile'), dict(type='mmdet.PackDetInputs')])
    with pytest.raises(ValueError, match='no image loading step'):
        resize_only_pipeline([dict(type='mmdet.Resize', scale=(64, 64), keep_ratio=True)])


def test_panoptic_annotation_loading_is_dropped_with_the_other_annotations():
    """Mask2Former's panoptic configs load panoptic annotations in their test pipeline, a
    transform that cannot even be built without panopticapi: the tools' image loader and the
    sliced predictor drop it like LoadAnnotations."""
    from helpers.mmdet_models import mmdet_config
    from mmyolo_vis_hooks.engine.core.pipeline import without_loading
    from mmyolo_vis_hooks.runtime.models import build_image_loader
    cfg = Config.fromfile(
        mmdet_config('mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py'))
    init_default_scope('mmdet')
    steps = [transform_type(s) for s in packaged_test_pipeline(cfg)]
    assert 'LoadPanopticAnnotations' in steps
    assert 'LoadPanopticAnnotations' not in [transform_type(s) for s in
                                             without_loading(packaged_test_pipeline(cfg))]
    build_image_loader(cfg)  # would raise ImportError naming panopticapi without it

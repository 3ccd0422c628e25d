"""The dummy forward (engine/core/dummy_forward.py) that the layer probe and the layer preview
run: blank images packed as a test pipeline packs them and padded by the model's data
preprocessor, then MMDetection's tensor-mode forward with the data samples, on detectors whose
forward needs them (two-stage, DETR-like, single-stage instance segmentation)."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from helpers import mmdet_config
from mmyolo_vis_hooks.engine.core.dummy_forward import (dummy_batch, dummy_input_size,
                                                        prepare_dummy_forward)
from mmyolo_vis_hooks.engine.featmap import probe_feature_layers


def _preprocessor(divisor):
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    return MODELS.build(dict(type='DetDataPreprocessor', mean=[0., 0., 0.], std=[1., 1., 1.],
                             pad_size_divisor=divisor))


@pytest.mark.parametrize('divisor, padded', [(32, (96, 64)), (1, (70, 50))])
def test_dummy_batch_is_what_a_test_pipeline_and_the_preprocessor_give(divisor, padded):
    model = SimpleNamespace(data_preprocessor=_preprocessor(divisor))
    data = dummy_batch(model, (70, 50), batch_size=2)
    assert data['inputs'].shape == (2, 3, *padded)
    assert data['inputs'].abs().sum() == 0
    for index, sample in enumerate(data['data_samples']):
        meta = sample.metainfo
        assert meta['img_id'] == index
        assert meta['ori_shape'] == meta['img_shape'] == (70, 50)
        assert meta['scale_factor'] == (1.0, 1.0) and meta['flip'] is False
        assert meta['batch_input_shape'] == padded and meta['pad_shape'] == padded
        # An image without objects: empty ground truth, as LoadAnnotations leaves it.
        assert len(sample.gt_instances) == 0 and sample.gt_instances.bboxes.shape == (0, 4)
        assert len(sample.gt_instances.masks) == 0


def test_a_plain_module_gets_a_zero_tensor():
    seen = []
    module = torch.nn.Conv2d(3, 2, 1)
    module.register_forward_hook(lambda m, inputs, output: seen.append(inputs[0]))
    forward = prepare_dummy_forward(module, (2, 3, 8, 6))
    assert seen == []  # prepared, not run
    assert forward().shape == (2, 2, 8, 6)
    assert seen[0].shape == (2, 3, 8, 6) and seen[0].abs().sum() == 0


# Each needed the samples for another reason: the RPN's predict (Faster R-CNN), positional
# masks and more positions than queries (DINO, 900 queries), an empty ground truth for the box
# head's loss (CondInst).
@pytest.mark.slow
@pytest.mark.parametrize('config, size, layers, shapes', [
    ('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', (64, 64), ['rpn_head.rpn_conv'],
     {'rpn_head.rpn_conv@0': (256, 16, 16), 'rpn_head.rpn_conv@4': (256, 1, 1)}),
    ('dino/dino-4scale_r50_8xb2-12e_coco.py', (256, 256), ['neck'],
     {'neck[0]': (256, 32, 32), 'neck[3]': (256, 4, 4)}),
    ('condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py', (64, 64),
     ['mask_head.mask_feature_head'], {'mask_head.mask_feature_head': (8, 8, 8)}),
])
def test_probe_runs_detectors_that_need_data_samples(config, size, layers, shapes):
    from mmyolo_vis_hooks.runtime.models import build_detector
    torch.manual_seed(0)
    model = build_detector(Config.fromfile(mmdet_config(config)), device='cpu')
    model.train()
    modes = [m.training for m in model.modules()]
    with torch.no_grad():
        assert dummy_input_size(model, (64, 64)) == size
    probed = probe_feature_layers(model, layers, 'test')
    for key, shape in shapes.items():
        assert probed[key] == shape, (key, probed)
    assert [m.training for m in model.modules()] == modes  # restored

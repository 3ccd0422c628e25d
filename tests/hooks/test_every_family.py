"""FeatMapVisHook and BoxAMVisHook in a real Runner for each of MMYOLO's 7 families, in both
``align`` modes: one training iteration, one validation epoch, images read back from
TensorBoard.

Each config is MMYOLO's packaged one (smallest variant) on the generated shapes data at 96 px:
the test pipeline with its own transforms at that scale; training uses the family's test-time
resize/letterbox instead of its mosaic/affine augmentations (which are beside the point here and
cost most of the time), and the data preprocessor's random batch resizes (YOLOX, PPYOLOE) are
pinned to 96 px.
"""
import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from helpers import packaged_config
from helpers.mmyolo_models import FAMILIES
from helpers.runner import image_steps, read_events, replace_key
from mmyolo_vis_hooks.engine.core.pipeline import transform_type
from mmyolo_vis_hooks.engine.core.pipeline import \
    test_pipeline_cfg as packaged_test_pipeline  # not a test: renamed for pytest
from mmyolo_vis_hooks.hooks import BoxAMVisHook, FeatMapVisHook

# The smallest variant of each family (tests/helpers/mmyolo_models.py).
FAMILY_CONFIGS = FAMILIES
SIZE = 96
CLASSES = ('circle', 'square', 'triangle')
# RTMDet's head applies this conv to every level (share_conv=True): one map per call.
RTMDET_SHARED_CONV = 'bbox_head.head_module.cls_convs[0][0].conv'


def _at_size(steps, size):
    """The pipeline with every resize/letterbox/pad step sized ``size`` x ``size``."""
    for step in steps:
        if step.get('scale') is not None:
            step['scale'] = (size, size)
        if step.get('size') is not None:
            step['size'] = (size, size)
        if step.get('width') is not None and step.get('height') is not None:
            step['width'] = step['height'] = size
    return steps


def family_train_cfg(family, data_root, work_dir, align):
    cfg = Config.fromfile(packaged_config(FAMILY_CONFIGS[family]))
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    replace_key(cfg.model, 'num_classes', len(CLASSES))  # head and assigners
    if cfg.model.backbone.get('init_cfg', {}).get('type') == 'Pretrained':
        cfg.model.backbone.init_cfg = None  # RTMDet's ImageNet weights: no downloads here
    for augment in cfg.model.data_preprocessor.get('batch_augments') or []:
        if 'random_size_range' in augment:
            augment.random_size_range = (SIZE, SIZE)
    test_pipeline = _at_size(packaged_test_pipeline(cfg), SIZE)
    resize_steps = [s for s in test_pipeline if transform_type(s) not in (
        'LoadImageFromFile', 'LoadAnnotations', 'PackDetInputs')]
    train_pipeline = [dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True), *resize_steps,
                      dict(type='mmdet.PackDetInputs')]
    for loader, split, pipeline in ((cfg.train_dataloader, 'train', train_pipeline),
                                    (cfg.val_dataloader, 'val', test_pipeline)):
        loader.batch_size = 4
        loader.num_workers = 0
        loader.persistent_workers = False
        dataset = loader.dataset
        while 'dataset' in dataset:  # dataset wrappers
            dataset = dataset.dataset
        dataset.update(data_root=data_root, metainfo=dict(classes=CLASSES),
                       ann_file=f'annotations/{split}.json', data_prefix=dict(img=f'{split}/'),
                       pipeline=pipeline)
        if dataset.get('batch_shapes_cfg'):
            dataset.batch_shapes_cfg.update(batch_size=4, img_size=SIZE)
    cfg.train_dataloader.dataset.indices = 4  # one iteration of batch 4
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(
        type='mmdet.CocoMetric', ann_file=data_root + 'annotations/val.json', metric='bbox')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint = None
    if 'max_epochs' in cfg.default_hooks.get('param_scheduler', {}):  # YOLOv5-style
        cfg.default_hooks.param_scheduler.max_epochs = 1
    featmap_layers = ['neck'] + ([RTMDET_SHARED_CONV] if family == 'rtmdet' else [])
    boxam_layers = [RTMDET_SHARED_CONV] if family == 'rtmdet' else None  # default: neck
    cfg.custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
    cfg.custom_hooks = [*cfg.get('custom_hooks', []),
                        dict(type='FeatMapVisHook', num_images=2, target_layers=featmap_layers,
                             align=align, log_stats=False, strict=True),
                        dict(type='BoxAMVisHook', num_images=1, method='eigencam', topk=1,
                             target_layers=boxam_layers, score_thr=0.0, align=align,
                             strict=True)]
    cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
    return cfg


def _decoded(acc, tag):
    (event, ) = acc.Images(tag)
    return cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.slow
@pytest.mark.parametrize('align', ['letterbox', 'resize'])
@pytest.mark.parametrize('family', list(FAMILY_CONFIGS))
def test_both_hooks_log_every_family(tmp_path, shapes_data, family, align):
    work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(family_train_cfg(family, shapes_data, work_dir, align))
    eval_inputs = []  # (H, W) of every eval-mode forward's input batch
    runner.model.backbone.register_forward_hook(
        lambda module, inputs, output: None if module.training else
        eval_inputs.append(tuple(inputs[0].shape[-2:])))
    runner.train()
    assert runner.iter == 1

    featmap = next(h for h in runner.hooks if isinstance(h, FeatMapVisHook))
    boxam = next(h for h in runner.hooks if isinstance(h, BoxAMVisHook))
    acc = read_events(work_dir)
    keys = ['neck[0]', 'neck[1]', 'neck[2]']
    if family == 'rtmdet':
        keys += [f'{RTMDET_SHARED_CONV}@{level}' for level in range(3)]
    expected = {f'featmap/{s.name}/{key}' for s in featmap.samples for key in keys}
    expected |= {f'boxam/{s.name}/eigencam' for s in boxam.samples}
    assert set(acc.Tags()['images']) == expected
    for tag in expected:
        assert image_steps(acc, tag) == [1], tag
    for sample in featmap.samples + boxam.samples:
        # Each map is drawn onto the original image (maps aligned to it, not to the input).
        original = cv2.imread(sample.img_path)
        for tag in (t for t in expected if f'/{sample.name}/' in t):
            picture = _decoded(acc, tag)
            assert picture.shape == original.shape, tag
            assert picture.std() > 0, tag
    # Besides the hooks' 64x64 layer probes (before_run), every eval forward ran at the small
    # size: validation (BatchShapePolicy may pad by up to one stride more) and the hooks' own
    # forwards, which with align='resize' are exactly 96x96 (the pipeline stretches).
    assert eval_inputs[:2] == [(64, 64), (64, 64)]
    assert all(SIZE <= max(shape) <= SIZE + 32 for shape in eval_inputs[2:]), eval_inputs
    if align == 'resize':
        assert eval_inputs.count((SIZE, SIZE)) >= len(featmap.samples) + len(boxam.samples)

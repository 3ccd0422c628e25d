"""FeatMapVisHook in a real Runner on three kinds of MMDetection 3.x detectors: dense one-stage
(RetinaNet), two-stage (Faster R-CNN) and DETR-like (DINO), small and with random weights
(tests/helpers/mmdet_models.py), in both ``align`` modes: one training iteration, one
validation epoch, the pictures read back from TensorBoard.

Alignment is checked exactly, per kind. The target layer is an identity inserted before the
backbone's stem convolution: its map is the network input itself (stride 1), so drawn as an
image (``topk=-1``, 3 channels, ``alpha=1``) it must reproduce the original image wherever the
wave images are affine, through MMDetection's keep-ratio ``Resize`` and the batch padding (the
two images differ in aspect and are validated in one batch: one is padded at the bottom, the
other at the right, and again to ``pad_size_divisor``: 32 for RetinaNet and Faster R-CNN, 1
for DINO).
"""
import cv2
import numpy as np
import pytest
from mmengine.runner import Runner
from torch import nn

from helpers.mmdet_models import (IMAGE_SIZES, affine_mask, batch_layout, runner_cfg, wave_image,
                                  write_wave_dataset)
from helpers.runner import image_steps, read_events
from mmyolo_vis_hooks.hooks import FeatMapVisHook

INPUT_TAP = 'backbone.conv1[0]'
# The hooks are registered in MMYOLO's registry; these configs' default scope is 'mmdet', where
# a bare name is not found: the scoped name reaches MMYOLO's registry from there.
HOOK = 'mmyolo.FeatMapVisHook'
# uint8 rounding of the image, of the resized input and of the drawn picture.
TOLERANCE = 2
DIVISORS = {'retinanet': 32, 'faster_rcnn': 32, 'dino': 1}


def _decoded(acc, tag):
    (event, ) = acc.Images(tag)
    return cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)


def _misses(picture, original):
    """Largest |picture - original| (BGR) on the affine parts of red (along x) and green (along
    y), and over all of blue (0: a flat map, drawn flat)."""
    height, width = original.shape[:2]
    diff = picture.astype(np.int32) - original.astype(np.int32)
    return (int(np.abs(diff[:, affine_mask(width), 2]).max()),
            int(np.abs(diff[affine_mask(height), :, 1]).max()), int(np.abs(diff[..., 0]).max()))


@pytest.mark.slow
@pytest.mark.parametrize('align', ['letterbox', 'resize'])
@pytest.mark.parametrize('kind', ['retinanet', 'faster_rcnn', 'dino'])
def test_featmap_hook_aligns_exactly_on_every_kind(tmp_path, kind, align, fast_config_dump):
    dataset = write_wave_dataset(str(tmp_path / 'data'))
    work_dir = str(tmp_path / 'work')
    hook_cfgs = [
        # The input (3 channels) drawn as it is, with nothing of the image below it.
        dict(type=HOOK, num_images=2, target_layers=[INPUT_TAP],
             channel_reduction=None, topk=-1, alpha=1.0, score_thr=None, align=align,
             log_stats=False, strict=True),
        # The kind's own feature maps, as users draw them.
        # DINO's encoder returns tokens: drawn as one map per level too.
        dict(type=HOOK, num_images=1,
             target_layers=['neck'] + (['encoder'] if kind == 'dino' else []), align=align,
             log_stats=False, strict=True),
    ]
    runner = Runner.from_cfg(runner_cfg(kind, dataset, work_dir, hook_cfgs))
    backbone = runner.model.backbone
    backbone.conv1 = nn.Sequential(nn.Identity(), backbone.conv1)  # the input tap
    eval_inputs = []  # (H, W) of every eval-mode forward
    backbone.conv1[0].register_forward_hook(
        lambda module, inputs, output: None if module.training else
        eval_inputs.append(tuple(output.shape[-2:])))
    runner.train()
    assert runner.iter == 1

    hooks = [h for h in runner.hooks if isinstance(h, FeatMapVisHook)]
    acc = read_events(work_dir)
    tags = set(acc.Tags()['images'])
    names = [s.name for s in hooks[0].samples]
    assert sorted(names) == ['wave_0', 'wave_1']
    assert {f'featmap/{name}/{INPUT_TAP}' for name in names} <= tags
    # Every neck level of the other hook: 5 for the FPNs, 4 for DINO's ChannelMapper.
    levels = 4 if kind == 'dino' else 5
    neck_name = hooks[1].samples[0].name
    assert {t for t in tags if t.startswith(f'featmap/{neck_name}/neck')} == \
        {f'featmap/{neck_name}/neck[{i}]' for i in range(levels)}
    if kind == 'dino':
        assert {t for t in tags if t.startswith(f'featmap/{neck_name}/encoder')} == \
            {f'featmap/{neck_name}/encoder[{i}]' for i in range(levels)}
    for name, (width, height) in zip(['wave_0', 'wave_1'], IMAGE_SIZES):
        tag = f'featmap/{name}/{INPUT_TAP}'
        assert image_steps(acc, tag) == [1]
        picture, original = _decoded(acc, tag), wave_image(width, height)
        assert picture.shape == original.shape
        assert max(_misses(picture, original)) <= TOLERANCE, (name, _misses(picture, original))

    # The two hooks' layer checks (before_run) ran at 64x64; DINO's first measure its finest
    # stride there, then run at the size its 100 queries need (8 x 10, a multiple of 32).
    probes = [(64, 64)] * 2 if kind != 'dino' else [(64, 64), (96, 96)] * 2
    assert eval_inputs[:len(probes)] == probes
    # The geometry really was padded: validation ran both images in one batch, padded to the
    # largest and to the divisor; with align='resize' each hook ran its images alone.
    (batch_h, batch_w), sizes = batch_layout(DIVISORS[kind])
    assert all(size != (batch_h, batch_w) for size in sizes)
    rest = eval_inputs[len(probes):]
    assert rest[0] == (batch_h, batch_w)
    if align == 'resize':
        divisor = DIVISORS[kind]
        alone = [(-(-h // divisor) * divisor, -(-w // divisor) * divisor) for h, w in sizes]
        assert rest[1:] == alone + [alone[hooks[1].samples[0].index]]
    else:
        assert rest[1:] == []  # both hooks reused the validation forward


def test_a_naive_stretch_would_fail_this_check(tmp_path):
    """The same comparison on the input stretched over the padded batch (what the naive tools
    draw) misses by far more than the tolerance: the check above can fail."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from mmdet.registry import MODELS
    from mmyolo_vis_hooks.engine.core.geometry import stretch_to_original
    from mmyolo_vis_hooks.engine.core.draw import overlay

    dataset = write_wave_dataset(str(tmp_path / 'data'))
    cfg = runner_cfg('retinanet', dataset, str(tmp_path / 'work'), [])
    init_default_scope('mmdet')
    pipeline = Compose(cfg.val_dataloader.dataset.pipeline)
    items = [pipeline(dict(img_path=f'{dataset["data_root"]}images/{name}', img_id=i,
                           instances=[]))
             for i, name in enumerate(dataset['images'])]
    data = MODELS.build(cfg.model.data_preprocessor)(pseudo_collate(items), False)
    for index, (width, height) in enumerate(IMAGE_SIZES):
        original = wave_image(width, height)
        stretched = stretch_to_original(data['inputs'][index],
                                        data['data_samples'][index].metainfo)
        picture = cv2.cvtColor(overlay(np.zeros_like(original), stretched, 1.0),
                               cv2.COLOR_RGB2BGR)
        assert max(_misses(picture, original)) > 10 * TOLERANCE

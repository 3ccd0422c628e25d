"""The featmap tool (``mmyolo-featmap``, ``mmyolo_vis_hooks.cli.featmap_vis``) on MMDetection's
two-stage and DETR-like detectors, which need data samples in their forward (small configs with
random weights: tests/helpers/mmdet_models.py). Run in this process."""
import math
import re

import cv2
import pytest

from helpers.mmdet_models import IMAGE_SIZES, small_kind_cfg, write_wave_dataset
from mmyolo_vis_hooks.cli import featmap_vis

pytestmark = pytest.mark.slow  # every test builds a detector

# Outputs of backbone (ResNet-18 stages) and neck per kind.
OUTPUTS = {'faster_rcnn': (4, 5), 'dino': (3, 4)}


def _config(tmp_path, kind):
    path = str(tmp_path / f'{kind}.py')
    small_kind_cfg(kind).dump(path)
    return path


@pytest.mark.parametrize('kind', ['faster_rcnn', 'dino'])
def test_every_map_is_drawn(tmp_path, kind, capsys):
    dataset = write_wave_dataset(str(tmp_path / 'data'))
    out = tmp_path / 'out'
    featmap_vis.main([dataset['data_root'] + 'images', _config(tmp_path, kind),
                      '--target-layers', 'backbone', 'neck', '--channel-reduction',
                      'squeeze_mean', '--score-thr', '2', '--out-dir', str(out)])
    assert 'wrote 2 image(s)' in capsys.readouterr().out
    assert sorted(p.name for p in out.glob('*.png')) == ['wave_0.png', 'wave_1.png']
    tiles = sum(OUTPUTS[kind])
    for name, (width, height) in zip(['wave_0.png', 'wave_1.png'], IMAGE_SIZES):
        grid = cv2.imread(str(out / name))
        # Every map (2 per row) at the original size (the images are under --max-size).
        rows = math.ceil(tiles / 2)
        assert grid.shape == (rows * (height + 16) + (rows - 1) * 4, 2 * width + 4, 3)
        assert grid.std() > 0


@pytest.mark.parametrize('kind, model, stem, rows', [
    # The data preprocessor pads the 250x330 input to 256x352 (pad_size_divisor=32); the RPN
    # conv runs on each of the 5 levels; the RoI head's boxes come from the RPN's proposals.
    ('faster_rcnn', 'FasterRCNN', '1x64x128x176', {
        'rpn_head.rpn_conv': r'^@0 1x64x64x88 \| .* \| @4 1x64x4x6$',
        'roi_head.bbox_head': r'^\d+x2, \d+x4$'}),
    # pad_size_divisor=1: no padding; the encoder runs on the 4 levels' positions together.
    ('dino', 'DINO', '1x64x125x165', {
        'positional_encoding': r'^@0 1x256x32x42 \| .* \| @3 1x256x4x6$',
        'encoder': r'^1x1792x256$', 'decoder.ref_point_head': r'^1x100x256$'}),
])
def test_preview_lists_the_layers(tmp_path, capsys, kind, model, stem, rows):
    featmap_vis.main(['unused.png', _config(tmp_path, kind), '--preview-model',
                      '--preview-depth', '1'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'Layers of {model} for a 1x3x250x330 input (usable as --target-layers):'
    # name -> output shape(s) column (the parameter count is the last field)
    shapes = {line.split()[0]: ' '.join(line.split()[1:-1]) for line in lines[2:]}
    assert shapes['backbone.conv1'] == stem
    for name, pattern in rows.items():
        assert re.match(pattern, shapes[name]), (name, shapes[name])

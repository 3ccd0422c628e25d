"""tools/featmap_vis.py end to end on generated images."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import pytest

from helpers import DEMO_CONFIG, REPO_ROOT

pytestmark = pytest.mark.slow  # every test runs the tool in a subprocess

TOOL = osp.join(REPO_ROOT, 'tools', 'featmap_vis.py')


def run_tool(*args, env=None):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_folder_of_images_all_layers_drawn(tmp_path, shapes_data):
    out = tmp_path / 'out'
    result = run_tool(shapes_data + 'val', DEMO_CONFIG, '--target-layers', 'backbone', 'neck',
                      'backbone.stem', '--channel-reduction', 'squeeze_mean', '--out-dir',
                      str(out), '--max-size', '200', '--ncols', '2')
    assert result.returncode == 0, result.stderr
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert pngs == [f'val_0000{i}.png' for i in range(8)]
    assert 'feature maps: 100%' in result.stderr  # the progress bar
    grid = cv2.imread(str(out / 'val_00000.png'))
    ori = cv2.imread(shapes_data + 'val/val_00000.png')
    scale = 200 / max(ori.shape[:2])
    tile_h, tile_w = round(ori.shape[0] * scale), round(ori.shape[1] * scale)
    # 7 maps (3 backbone outputs, 3 neck outputs, stem) in 2 columns: 4 rows, none dropped.
    assert grid.shape[1] == 2 * tile_w + 4
    assert grid.shape[0] == 4 * (tile_h + 16) + 3 * 4


def test_preview_lists_layers_with_shapes_and_params(tmp_path):
    result = run_tool('unused.png', DEMO_CONFIG, '--preview-model', '--preview-depth', '2')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    stem = next(line for line in lines if line.strip().startswith('backbone.stem '))
    assert '1x16x160x160' in stem and '1,760' in stem
    assert any(line.strip().startswith('neck.out_layers[2]') for line in lines)
    assert any(line.strip().startswith('backbone.stage1[0] ') for line in lines)
    assert not any(line.strip().startswith('backbone.stage1[0].') for line in lines)


def test_cfg_options_reach_the_model(tmp_path):
    # widen_factor 0.5 (YOLOv5-s) doubles the stem's channels: visible only if the options
    # reach the model that is built.
    result = run_tool('unused.png', DEMO_CONFIG, '--preview-model', '--preview-depth', '1',
                      '--cfg-options', 'model.backbone.widen_factor=0.5',
                      'model.neck.widen_factor=0.5',
                      'model.bbox_head.head_module.widen_factor=0.5')
    assert result.returncode == 0, result.stderr
    stem = next(line for line in result.stdout.splitlines()
                if line.strip().startswith('backbone.stem '))
    assert '1x32x160x160' in stem


@pytest.mark.parametrize('args, message', [
    (['--target-layers', 'neck.out_layer[1]'], 'unknown layer'),
    (['--channel-reduction', 'none', '--topk', '6'], 'fewer than topk=6'),
    # The head's module returns lists of per-level outputs; a loss module never runs.
    (['--target-layers', 'bbox_head.head_module'], "'bbox_head.head_module' returned tuple("),
    (['--target-layers', 'bbox_head.loss_obj'], "'bbox_head.loss_obj' did not run"),
])
def test_bad_arguments_are_clear_errors(tmp_path, shapes_data, args, message):
    result = run_tool(shapes_data + 'val/val_00000.png', DEMO_CONFIG, *args, '--out-dir',
                      str(tmp_path))
    assert result.returncode != 0
    assert message in result.stderr


def test_show_without_a_display_writes_and_says_so(tmp_path, shapes_data):
    env = {k: v for k, v in os.environ.items() if k != 'DISPLAY'}
    result = run_tool(shapes_data + 'val/val_00001.png', DEMO_CONFIG, '--target-layers', 'neck',
                      '--out-dir', str(tmp_path), '--show', env=env)
    assert result.returncode == 0, result.stderr
    assert '--show: no display (DISPLAY is unset); val_00001.png not shown' in result.stderr
    assert (tmp_path / 'val_00001.png').exists()

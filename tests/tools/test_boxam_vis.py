"""tools/boxam_vis.py end to end on generated images (in-process: main(argv))."""
import re

import cv2
import numpy as np
import pytest

from helpers import DEMO_CONFIG, packaged_config
from helpers.tools import assert_one_line_error, run_tool_in_process
from mmyolo_vis_hooks.cli import boxam_vis
from mmyolo_vis_hooks.testing.cam_reference import write_saturated_checkpoint



@pytest.mark.slow
def test_folder_per_box_grids(tmp_path, shapes_data, demo_checkpoint, capsys):
    images = tmp_path / 'imgs'
    images.mkdir()
    for i in (0, 1):  # a folder of two of the generated validation images
        name = f'val_0000{i}.png'
        (images / name).write_bytes(open(shapes_data + 'val/' + name, 'rb').read())
    out = tmp_path / 'out'
    boxam_vis.main([str(images), DEMO_CONFIG, demo_checkpoint, '--topk', '2',
                    '--out-dir', str(out)])
    captured = capsys.readouterr()
    assert 'box CAM (gradcam): 100%' in captured.err  # the progress bar
    assert 'wrote 2 image(s)' in captured.out
    for i in (0, 1):
        drawn = cv2.imread(str(out / f'val_0000{i}.png'))
        ori = cv2.imread(str(images / f'val_0000{i}.png'))
        # Two titled tiles (one per box) of the original size, side by side.
        assert drawn.shape == (ori.shape[0] + 16, 2 * ori.shape[1] + 4, 3)
        tile = drawn[16:, :ori.shape[1]]
        assert np.abs(tile.astype(int) - ori.astype(int)).mean() > 10  # heat was drawn


@pytest.mark.slow
def test_merged_box_normalised_ablation_resize_mode(tmp_path, shapes_data, demo_checkpoint,
                                                     capsys, monkeypatch):
    """... and --show without a display says so instead of failing."""
    out = tmp_path / 'out'
    image = shapes_data + 'val/val_00002.png'
    monkeypatch.delenv('DISPLAY', raising=False)
    boxam_vis.main([image, DEMO_CONFIG, demo_checkpoint, '--method', 'ablationcam',
                    '--ratio-channels-to-ablate', '0.25', '--batch-size', '16', '--merge',
                    '--norm-in-bbox', '--align', 'resize', '--topk', '3', '--max-size', '200',
                    '--out-dir', str(out), '--show'])
    assert '--show: no display (DISPLAY is unset); val_00002.png not shown' in \
        capsys.readouterr().err
    drawn = cv2.imread(str(out / 'val_00002.png'))
    ori = cv2.imread(image)
    scale = 200 / max(ori.shape[:2])
    assert drawn.shape == (round(ori.shape[0] * scale), round(ori.shape[1] * scale), 3)


@pytest.mark.slow
def test_no_box_above_threshold_is_reported_not_drawn(tmp_path, shapes_data, capsys):
    out = tmp_path / 'out'
    # Random weights (no checkpoint): no box scores 0.99.
    boxam_vis.main([shapes_data + 'val/val_00000.png', DEMO_CONFIG, '--score-thr', '0.99',
                    '--out-dir', str(out)])
    captured = capsys.readouterr()
    assert 'no box above score_thr=0.99' in captured.err
    assert not list(out.glob('*.png'))


@pytest.mark.slow
def test_cfg_options_reach_the_model(capsys):
    # widen_factor 0.5 (YOLOv5-s) doubles the channels of the neck outputs (256 -> 512 at the
    # coarsest level of the demo's YOLOv5-n): visible only if the options reach the model.
    boxam_vis.main(['unused.png', DEMO_CONFIG, '--preview-model', '--preview-depth', '2',
                    '--cfg-options', 'model.backbone.widen_factor=0.5',
                    'model.neck.widen_factor=0.5',
                    'model.bbox_head.head_module.widen_factor=0.5'])
    lines = capsys.readouterr().out.splitlines()
    out2 = next(line for line in lines if line.strip().startswith('neck.out_layers[2] '))
    assert '1x512x10x10' in out2


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (['--ratio-channels-to-ablate', '2'], r'ratio_channels_to_ablate must be a number in '
                                          r'\(0, 1\], got 2\.0'),
    (['--method', 'scorecam'], 'invalid choice'),
    (['--target', 'score'], "argument --target: invalid choice: 'score'"),
    (['--score-thr', '1.5'], r'--score-thr must be a number in \[0, 1\]'),
    (['--target-layers', 'neck.out_layer[1]'], 'unknown layer'),
])
def test_bad_arguments_are_clear_errors(tmp_path, shapes_data, capsys, args, message):
    """One line on stderr (argparse's convention) and exit code 2, no traceback."""
    with pytest.raises(SystemExit) as info:
        boxam_vis.main([shapes_data + 'val/val_00000.png', DEMO_CONFIG, *args, '--out-dir',
                        str(tmp_path)], prog='boxam_vis.py')
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert re.search(message, err), err
    assert 'boxam_vis.py: error: ' in err and 'Traceback' not in err


@pytest.mark.slow
def test_layer_the_scores_do_not_depend_on_is_refused_before_any_image(tmp_path, shapes_data,
                                                                        capsys):
    """YOLOv8's box-regression branch, with a gradient-free method (which would otherwise draw
    maps unrelated to the boxes, or nothing): a clear error before any image is read."""
    with pytest.raises(SystemExit):
        boxam_vis.main([shapes_data + 'val/val_00000.png',
                        packaged_config('yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py'),
                        '--method', 'eigencam', '--score-thr', '0', '--target-layers',
                        'bbox_head.head_module.reg_preds[0]', '--out-dir', str(tmp_path / 'out')])
    assert re.search(r"'bbox_head\.head_module\.reg_preds\[0\]' does not feed the box scores "
                     r'\(the scores of YOLOv8Head do not depend on its output\).*Accepted: .*'
                     r"'neck\.out_layers\[0\]'", capsys.readouterr().err)
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_saturated_boxes_are_named_on_stderr_and_drawn_without_heat(tmp_path, shapes_data,
                                                                      demo_checkpoint, capsys):
    """The demo checkpoint with the objectness and class-0 biases raised by 200 (every prior
    scores exactly 1.0): with --target log_score the gradient underflows to 0, and each box is
    named on stderr and drawn as the plain image with its box; --target logit draws heat."""
    saturated = write_saturated_checkpoint(demo_checkpoint, str(tmp_path / 'saturated.pth'))
    image = shapes_data + 'val/val_00000.png'
    ori = cv2.imread(image)
    for target in ('log_score', 'logit'):
        out = tmp_path / target
        boxam_vis.main([image, DEMO_CONFIG, saturated, '--topk', '2', '--target', target,
                        '--out-dir', str(out)])
        err = capsys.readouterr().err
        tile = cv2.imread(str(out / 'val_00000.png'))[16:, :ori.shape[1]]
        difference = np.abs(tile.astype(int) - ori.astype(int))
        if target == 'log_score':
            for k in (0, 1):
                assert re.search(rf'val_00000\.png: warning: box #{k} \(label circle, score '
                                 rf'1\.0000\) has no CAM, zero gradient', err), err
            assert np.median(difference) == 0  # no heat: the plain image and its box
        else:
            assert 'has no CAM' not in err
            assert difference.mean() > 10


def test_norm_in_mask_and_norm_in_bbox_exclude_each_other(tmp_path, capsys):
    """Refused before any model is built (the config is never read)."""
    result = run_tool_in_process('boxam_vis', ['unused.png', str(tmp_path / 'no_config.py'),
                                               '--norm-in-mask', '--norm-in-bbox'], capsys)
    assert_one_line_error(result, 'boxam_vis',
                          '--norm-in-mask and --norm-in-bbox exclude each other: pick one')


@pytest.mark.slow
def test_norm_in_mask_is_refused_for_a_box_only_detector(tmp_path, shapes_data, capsys):
    result = run_tool_in_process('boxam_vis', [shapes_data + 'val/val_00000.png', DEMO_CONFIG,
                                               '--norm-in-mask', '--out-dir',
                                               str(tmp_path / 'out')], capsys)
    assert_one_line_error(result, 'boxam_vis', '--norm-in-mask needs instance masks; '
                          'YOLOv5Head', 'predicts boxes only: use --norm-in-bbox')
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_norm_in_mask_keeps_heat_inside_the_instance_mask_only(tmp_path, shapes_data, capsys):
    """A YOLOv5-ins (the demo detector's weights, a random mask branch): with --norm-in-mask
    every pixel with heat lies in the explained instance's mask (the model's own prediction,
    rescaled by its own code), without it many lie outside."""
    from mmdet.apis import inference_detector
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from helpers.mmyolo_models import INSTANCE, yolov5_ins_with_demo_weights
    from helpers.runner import replace_key
    from mmyolo_vis_hooks.runtime.models import build_detector
    cfg = Config.fromfile(packaged_config(INSTANCE['yolov5_ins']))
    replace_key(cfg.model, 'num_classes', 3)
    config = str(tmp_path / 'yolov5_ins_shapes.py')
    cfg.dump(config)
    checkpoint = yolov5_ins_with_demo_weights(config, str(tmp_path / 'ins.pth'))
    image = shapes_data + 'val/val_00001.png'
    init_default_scope('mmyolo')
    instances = inference_detector(build_detector(config, checkpoint, device='cpu'),
                                   image).pred_instances
    top = int(instances.scores.argmax())
    assert float(instances.scores[top]) > 0.3
    mask = instances.masks[top].numpy().astype(np.uint8)
    near_mask = cv2.dilate(mask, np.ones((7, 7), np.uint8)).astype(bool)  # 3 px around
    original = cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB).astype(int)
    jet_zero = cv2.cvtColor(cv2.applyColorMap(np.zeros((1, 1), np.uint8), cv2.COLORMAP_JET),
                            cv2.COLOR_BGR2RGB)[0, 0].astype(int)
    no_heat = np.round(0.5 * original + 0.5 * jet_zero)
    outside = {}
    for flag in ([], ['--norm-in-mask']):
        out = tmp_path / ('mask' if flag else 'plain')
        boxam_vis.main([image, config, checkpoint, '--topk', '1', '--score-thr', '0.3',
                        *flag, '--out-dir', str(out)])
        assert 'wrote 1 image(s)' in capsys.readouterr().out
        drawn = cv2.cvtColor(cv2.imread(str(out / 'val_00001.png')), cv2.COLOR_BGR2RGB)
        assert drawn.shape == original.shape  # one reliable box: one tile, no caption
        heat = (np.abs(drawn - no_heat) > 1).any(axis=-1) & ~(drawn == 255).all(axis=-1)
        outside[bool(flag)] = int((heat & ~near_mask).sum())
        assert heat.sum() > 100
    # Off the mask only the box's caption (black text on white, 2 x 8 px letters or so).
    assert outside[True] < 300 and outside[False] > 10 * max(outside[True], 100), outside

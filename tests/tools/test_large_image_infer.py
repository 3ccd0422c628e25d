"""tools/large_image_infer.py (mmyolo_vis_hooks.cli.large_image_infer) in-process: bad input
ends in one line ``large_image_infer: error: ...`` and exit code 2 before any work; end to end
on a random-init and the trained demo detector."""
import json
import re

import cv2
import numpy as np
import pytest
import torch

from helpers import DEMO_CONFIG
from mmyolo_vis_hooks.cli import large_image_infer as tool
from mmyolo_vis_hooks.engine.slicing import (Detections, load_coco_ground_truth,
                                             match_detections, matched_fraction)
from helpers.slicing import LOW_THR

PROG = 'large_image_infer'


def _assert_one_line_error(capsys, pattern, main, argv):
    """``main(argv, prog=PROG)`` exits with code 2 after ONE line ``<prog>: error: ...``
    on stderr matching ``pattern`` (a regular expression), and no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv, prog=PROG)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'{PROG}: error: '), err
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert 'Traceback' not in err
    return lines[0]


@pytest.mark.parametrize('flags, message', [
    (['--patch-size', '0'], 'patch size must be a positive'),
    (['--patch-overlap-ratio', '1'], r'overlap ratio must be a number in \[0, 1\)'),
    (['--patch-overlap-ratio', '-0.5'], r'overlap ratio must be a number in \[0, 1\)'),
    (['--batch-size', '0'], 'batch size must be'),
    (['--merge-iou-thr', '2'], 'merge threshold'),
])
def test_tool_rejects_bad_arguments_before_any_work(flags, message, tmp_path, capsys):
    """The checkpoint does not exist: the argument error must come first (no model built)."""
    img = tmp_path / 'img.png'
    cv2.imwrite(str(img), np.zeros((40, 40, 3), np.uint8))
    _assert_one_line_error(capsys, message, tool.main, [
        str(img), DEMO_CONFIG, str(tmp_path / 'missing.pth'), '--out-dir',
        str(tmp_path / 'out'), *flags])
    assert not (tmp_path / 'out').exists()


def test_tool_rejects_missing_image_empty_folder_and_clashing_names(tmp_path, capsys):
    _assert_one_line_error(capsys, 'not found', tool.main,
                           [str(tmp_path / 'nope.png'), DEMO_CONFIG, 'x.pth'])
    (tmp_path / 'empty').mkdir()
    _assert_one_line_error(capsys, 'no images', tool.main,
                           [str(tmp_path / 'empty'), DEMO_CONFIG, 'x.pth'])
    for sub in ('a', 'b'):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / 'same.png'), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / 'list.txt').write_text('a/same.png\nb/same.png\n')
    _assert_one_line_error(capsys, 'would both be written as same.png', tool.main,
                           [str(tmp_path / 'list.txt'), DEMO_CONFIG, 'x.pth'])


@pytest.mark.slow
def test_tool_end_to_end(random_checkpoint, small_large_image, tmp_path):
    img_path, _ = small_large_image
    out = tmp_path / 'out'
    doc = tool.infer([img_path, DEMO_CONFIG, random_checkpoint, '--out-dir', str(out),
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


@pytest.mark.slow
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
    doc = tool.infer([str(folder), DEMO_CONFIG, random_checkpoint, '--out-dir',
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


@pytest.mark.slow
def test_tool_options_reach_the_model(random_checkpoint, small_large_image, tmp_path):
    """--cfg-options reaches the built model; --fuse-conv-bn keeps the boxes."""
    img_path = str(tmp_path / 'crop.png')
    cv2.imwrite(img_path, cv2.imread(small_large_image[0])[:560, :560])  # 4 slices
    common = [img_path, DEMO_CONFIG, random_checkpoint, '--score-thr', str(LOW_THR),
              '--no-progress', '--batch-size', '4']
    plain = tool.infer(common + ['--out-dir', str(tmp_path / 'plain')])['annotations']
    fused = tool.infer(common + ['--out-dir', str(tmp_path / 'fused'),
                                '--fuse-conv-bn'])['annotations']
    capped = tool.infer(common + ['--out-dir', str(tmp_path / 'capped'), '--cfg-options',
                                 'model.test_cfg.max_per_img=2'])['annotations']

    def dets(anns):
        return Detections([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                            a['bbox'][1] + a['bbox'][3]] for a in anns],
                          [a['score'] for a in anns], [a['category_id'] - 1 for a in anns])

    assert len(plain) > 8
    assert matched_fraction(dets(plain), dets(fused)) >= 0.97
    assert matched_fraction(dets(fused), dets(plain)) >= 0.97
    assert 0 < len(capped) <= 2 * 4  # at most 2 boxes from each of the 4 slices


@pytest.mark.slow
def test_tool_loads_pickled_objects_only_with_unsafe_load(random_checkpoint, tmp_path, capsys):
    from argparse import Namespace

    ckpt = torch.load(random_checkpoint, weights_only=True)
    ckpt['meta']['args'] = Namespace(note='not on the allow-list')
    path = str(tmp_path / 'pickled.pth')
    torch.save(ckpt, path)
    img = str(tmp_path / 'img.png')
    cv2.imwrite(img, np.zeros((64, 80, 3), np.uint8))
    argv = [img, DEMO_CONFIG, path, '--out-dir', str(tmp_path / 'out'), '--no-progress']
    # UnsafeCheckpointError, as one line
    _assert_one_line_error(capsys, '--unsafe-load', tool.main, argv)
    with pytest.warns(UserWarning, match='code inside the file runs'):
        doc = tool.infer(argv + ['--unsafe-load'])
    assert doc['images'][0]['width'] == 80


@pytest.mark.slow  # the trained demo detector on 104 slices
def test_trained_model_on_the_full_size_large_image(demo_checkpoint, tmp_path):
    """The embedded 3000x2000 image, 104 slices: sliced inference finds the small shapes."""
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    ann = generate_large_image(str(tmp_path / 'large'), seed=0)
    img_path = str(tmp_path / 'large' / 'large_00000.png')
    doc = tool.infer([img_path, DEMO_CONFIG, demo_checkpoint, '--out-dir', str(tmp_path / 'out'),
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

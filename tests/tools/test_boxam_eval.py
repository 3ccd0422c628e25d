"""tools/boxam_eval.py end to end on the generated validation images (in-process: main(argv))."""
import csv
import json
import math
import re

import cv2
import pytest

from helpers import DEMO_CONFIG
from helpers.tools import load_tool
from mmyolo_vis_hooks.cli import boxam_eval


@pytest.mark.slow
def test_table_csv_json_and_plot_for_two_methods(tmp_path, shapes_data, demo_checkpoint,
                                                  capsys):
    out = tmp_path / 'eval'
    # The thin wrapper in tools/ runs the package's tool.
    load_tool('boxam_eval').main([
        shapes_data + 'annotations/val.json', DEMO_CONFIG, demo_checkpoint, '--method',
        'layercam', 'gradcam', '--max-images', '2', '--topk', '2', '--steps', '4',
        '--eval-batch-size', '8', '--reference', '--no-progress', '--out-dir', str(out)])
    printed = capsys.readouterr().out
    assert 'Faithfulness on 2 image(s), top 2 boxes above 0.3, 4 steps, blur baseline' in printed
    rows = {line.split('|')[1].strip(): line for line in printed.splitlines()
            if re.match(r'\| (layercam|gradcam) \|', line)}
    assert set(rows) == {'layercam', 'gradcam'}
    # ground truth given: every metric has a value (mean ± std)
    assert all(row.count('±') == 5 for row in rows.values()), rows

    with open(out / 'faithfulness.csv', newline='', encoding='utf-8') as f:
        table = {row['method']: row for row in csv.DictReader(f)}
    data = json.loads((out / 'faithfulness.json').read_text())
    assert data['fractions'] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert data['settings']['steps'] == 4 and data['settings']['images'] == 2
    for method in ('layercam', 'gradcam'):
        entry = data['methods'][method]
        assert entry['boxes'] == int(table[method]['boxes']) == 4  # 2 images x top 2
        assert entry['gt_matched'] == 4  # the demo detector's boxes are real objects
        for key in ('deletion_auc', 'insertion_auc', 'pointing_game', 'energy_in_gt'):
            mean = entry[f'{key}_mean']
            assert 0.0 <= mean <= 1.0 and math.isfinite(entry[f'{key}_std']), (method, key)
            assert float(table[method][f'{key}_mean']) == pytest.approx(mean)
            assert f'{mean:.3f} ±' in rows[method]
        assert entry['seconds_per_box_mean'] > 0
        assert len(entry['deletion_curve']) == len(entry['insertion_curve']) == 5
        # Both curves run between the image's own score and the blurred image's.
        assert entry['deletion_curve'][0] == pytest.approx(entry['insertion_curve'][-1])
        assert entry['deletion_curve'][0] > entry['deletion_curve'][-1]
    # The calibration rows: the box's own rectangle beats a flat map on both curves; no time.
    box, uniform = data['methods']['(box)'], data['methods']['(uniform)']
    assert box['boxes'] == uniform['boxes'] == 4
    assert box['deletion_auc_mean'] < uniform['deletion_auc_mean']
    assert box['insertion_auc_mean'] > uniform['insertion_auc_mean']
    assert box['seconds_per_box_mean'] is None and table['(box)']['seconds_per_box_mean'] == ''
    assert re.search(r'^\| \(uniform\) \| 4 \|.* \| - \|$', printed, re.M)
    assert '(box)' not in data['best'].values()
    with open(out / 'boxes.csv', newline='', encoding='utf-8') as f:
        boxes = [b for b in csv.DictReader(f) if not b['method'].startswith('(')]
    assert len(boxes) == 8 and {b['image'] for b in boxes} == {'val_00000.png',
                                                                'val_00001.png'}
    plot = cv2.imread(str(out / 'faithfulness_curves.png'))
    assert plot is not None and plot.shape[1] > plot.shape[0] > 200  # two panels side by side
    assert plot.std() > 10  # lines and text, not a blank canvas


@pytest.mark.parametrize('args, message', [
    (['--steps', '1'], r'steps must be an int >= 2'),
    (['--baseline', 'zeros'], "argument --baseline: invalid choice: 'zeros'"),
    (['--tolerance', '-1'], r'tolerance must be a number >= 0'),
    (['--method', 'drise', '--keep-prob', '1.5'], r'keep_prob must be a number in \(0, 1\)'),
    (['--method', 'scorecam'], 'invalid choice'),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    """Checked before the model is built: one line on stderr, exit code 2, no traceback."""
    with pytest.raises(SystemExit) as info:
        boxam_eval.main([str(tmp_path), DEMO_CONFIG, *args, '--out-dir', str(tmp_path)],
                        prog='boxam_eval.py')
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert re.search(message, err), err
    assert err.startswith('boxam_eval.py: error: ') and err.count('\n') == 1
    assert 'Traceback' not in err

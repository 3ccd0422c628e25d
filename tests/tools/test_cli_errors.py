"""One way for every tool to fail: bad arguments, missing files and refused checkpoints end in
ONE line ``<tool>: error: <what was wrong and what is accepted>`` on stderr and exit code 2,
never a traceback; ``MMYOLO_VIS_DEBUG=1`` shows the traceback. Run as users run them: the
scripts in ``tools/`` in a fresh process, once per tool and kind of failure; the many argument
checks run the same ``main`` in this process (a fresh process costs seconds of imports each).
"""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers import DEMO_CONFIG, REPO_ROOT
from helpers.tools import assert_one_line_error, run_tool_in_process

pytestmark = pytest.mark.slow
TOOLS = ('featmap_vis', 'boxam_vis', 'boxam_eval', 'large_image_infer')


def _run_tool(name, args, env=None):
    return subprocess.run([sys.executable, osp.join(REPO_ROOT, 'tools', f'{name}.py'), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


class _RunsCode:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def _val_image(data_root):
    return osp.join(data_root, 'val', 'val_00000.png')


def _tool_commands(image, checkpoint, out_dir):
    """Arguments of every tool that takes a checkpoint."""
    return {
        'featmap_vis': [image, DEMO_CONFIG, checkpoint, '--out-dir', out_dir],
        'boxam_vis': [image, DEMO_CONFIG, checkpoint, '--out-dir', out_dir],
        'boxam_eval': [image, DEMO_CONFIG, checkpoint, '--out-dir', out_dir, '--steps', '2'],
        'large_image_infer': [image, DEMO_CONFIG, checkpoint, '--out-dir', out_dir,
                              '--no-progress'],
    }


def test_every_tool_is_covered():
    """A new tool joins the tests below: every module of mmyolo_vis_hooks.cli with a main,
    and a wrapper in tools/ for each."""
    cli_dir = osp.join(REPO_ROOT, 'mmyolo_vis_hooks', 'cli')
    tools = {osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(cli_dir, '*.py'))
             if 'def main(' in open(p, encoding='utf-8').read()}
    assert tools == set(TOOLS) == set(_tool_commands('i', 'c', 'o'))
    for tool in tools:
        assert osp.isfile(osp.join(REPO_ROOT, 'tools', f'{tool}.py'))


BAD_ARGUMENTS = [
    # argparse's own checks: one line too (no usage block)
    ('featmap_vis', ['--channel-reduction', 'median'], ['invalid choice', "'median'"]),
    ('boxam_vis', ['--method', 'scorecam'], ['invalid choice', 'gradcam']),
    ('large_image_infer', ['--batch-size', 'eight'], ['invalid int value', "'eight'"]),
    ('featmap_vis', ['--no-such-flag'], ['unrecognized arguments: --no-such-flag']),
    # our checks, before any model is built
    ('featmap_vis', ['--alpha', '1.5'], ['alpha must be a number in [0, 1]', '1.5']),
    ('featmap_vis', ['--channel-reduction', 'none', '--topk', '0'],
     ['topk must be a positive int or -1']),
    ('featmap_vis', ['--channel-reduction', 'none', '--topk', '6', '--arrangement', '2', '2'],
     ['arrangement (2, 2) has 4 cells, fewer than topk=6']),
    ('boxam_vis', ['--score-thr', '2'], ['--score-thr must be a number in [0, 1]', '2.0']),
    ('boxam_vis', ['--batch-size', '0'], ['batch_size must be a positive int', '0']),
    ('boxam_vis', ['--ratio-channels-to-ablate', '1.5'],
     ['ratio_channels_to_ablate must be a number in (0, 1]', '1.5']),
    ('boxam_eval', ['--method', 'drise', '--num-masks', '0'],
     ['num_masks must be a positive int', '0']),
    ('large_image_infer', ['--patch-overlap-ratio', '1.0'],
     ['patch overlap ratio must be a number in [0, 1)', '1.0']),
    ('large_image_infer', ['--patch-size', '0'],
     ['patch size must be a positive number of pixels']),
    ('large_image_infer', ['--score-thr', '-0.5'],
     ['score threshold must be a number in [0, 1]', '-0.5']),
    ('featmap_vis', ['--device', 'gpu0'], ["unknown device 'gpu0'", 'cuda:0']),
    ('large_image_infer', ['--device', 'quantum'], ["unknown device 'quantum'"]),
]
if not torch.cuda.is_available():
    BAD_ARGUMENTS += [
        ('boxam_vis', ['--device', 'cuda:0'], ['CUDA is not available', '--device cpu']),
        ('large_image_infer', ['--device', 'cuda'], ['CUDA is not available'])]


@pytest.mark.parametrize('tool, extra, fragments', BAD_ARGUMENTS,
                         ids=[f'{t}{"".join(a[:1])}-{i}' for i, (t, a, _) in
                              enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_end_in_one_line(tmp_path, shapes_data, capsys, tool, extra, fragments):
    args = _tool_commands(_val_image(shapes_data), str(tmp_path / 'missing.pth'),
                          str(tmp_path / 'out'))[tool]
    assert_one_line_error(run_tool_in_process(tool, args + extra, capsys), tool, *fragments)
    assert not (tmp_path / 'out').exists()  # refused before any work


@pytest.mark.parametrize('tool', TOOLS)
def test_missing_files_end_in_one_line(tmp_path, shapes_data, capsys, tool):
    image = _val_image(shapes_data)
    out = str(tmp_path / 'out')
    missing_image = _tool_commands(str(tmp_path / 'nope.png'), 'x.pth', out)[tool]
    assert_one_line_error(_run_tool(tool, missing_image), tool, 'nope.png')
    missing_config = _tool_commands(image, 'x.pth', out)[tool]
    missing_config[1] = str(tmp_path / 'no_config.py')
    assert_one_line_error(run_tool_in_process(tool, missing_config, capsys), tool,
                           'config file not found', 'no_config.py')
    missing_checkpoint = _tool_commands(image, str(tmp_path / 'missing.pth'), out)[tool]
    assert_one_line_error(run_tool_in_process(tool, missing_checkpoint, capsys), tool,
                           'missing.pth')


@pytest.mark.parametrize('tool', ['featmap_vis', 'boxam_vis', 'boxam_eval'])
def test_unknown_layer_ends_in_one_line_with_the_nearest_names(tmp_path, shapes_data, tool):
    args = [_val_image(shapes_data), DEMO_CONFIG, '--target-layers', 'neck.out_layer[2]',
            '--out-dir', str(tmp_path / 'out')]
    line = assert_one_line_error(_run_tool(tool, args), tool, "unknown layer 'neck.out_layer[2]'")
    assert 'neck.out_layers[2]' in line


@pytest.mark.parametrize('tool', TOOLS)
def test_tools_refuse_code_running_checkpoint(tmp_path, shapes_data, tool):
    marker = tmp_path / 'pwned'
    checkpoint = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=_RunsCode(marker)), checkpoint)
    commands = _tool_commands(_val_image(shapes_data), checkpoint, str(tmp_path / 'out'))
    result = _run_tool(tool, commands[tool])
    assert_one_line_error(result, tool, f'Refusing to load {checkpoint}', '--unsafe-load')
    assert not marker.exists()


def test_debug_variable_shows_the_traceback(tmp_path, shapes_data):
    args = _tool_commands(_val_image(shapes_data), 'x.pth', str(tmp_path / 'out'))['boxam_vis']
    result = _run_tool('boxam_vis', args + ['--score-thr', '2'], env={'MMYOLO_VIS_DEBUG': '1'})
    assert result.returncode != 0
    assert 'Traceback' in result.stderr and 'ValueError' in result.stderr


def test_unsafe_load_is_an_explicit_opt_out(tmp_path, shapes_data):
    marker = tmp_path / 'ran'
    checkpoint = str(tmp_path / 'trusted.pth')
    torch.save(dict(state_dict={'w': torch.zeros(1)}, meta=_RunsCode(marker)), checkpoint)
    args = _tool_commands(_val_image(shapes_data), checkpoint,
                          str(tmp_path / 'out'))['featmap_vis']
    result = _run_tool('featmap_vis', args + ['--unsafe-load'])
    assert marker.exists()  # the file's code ran: the opt-out really unpickles everything
    assert 'Refusing to load' not in result.stderr
    assert 'weights_only=False: code inside the file runs' in result.stderr


def test_device_defaults_to_cuda_where_available(monkeypatch):
    """No --device: cuda:0 where CUDA is available (MMYOLO's demos' default), else cpu; the
    tools see the resolved device."""
    from mmyolo_vis_hooks.cli import common, featmap_vis
    from mmyolo_vis_hooks.engine.core import devices
    seen = []
    argv = ['img.png', DEMO_CONFIG]
    common.run_tool(featmap_vis.build_parser('featmap_vis'), seen.append, argv)
    assert seen[-1].device == ('cuda:0' if torch.cuda.is_available() else 'cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert devices.default_device() == 'cuda:0'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    common.run_tool(featmap_vis.build_parser('featmap_vis'), seen.append, argv)
    assert seen[-1].device == 'cpu'
    common.run_tool(featmap_vis.build_parser('featmap_vis'), seen.append,
                    argv + ['--device', 'cpu'])
    assert seen[-1].device == 'cpu'


@pytest.mark.slow
def test_sliced_tool_without_sahi_says_what_to_install(tmp_path, shapes_data, capsys,
                                                       demo_checkpoint, monkeypatch):
    """sahi is an extra ([sliced]): its merges refuse in one line, before any image, where it
    is missing; soft_nms (mmcv's) needs no sahi."""
    monkeypatch.setitem(sys.modules, 'sahi', None)  # find_spec says 'not installed'
    args = _tool_commands(_val_image(shapes_data), demo_checkpoint, str(tmp_path / 'out'))
    result = run_tool_in_process('large_image_infer', args['large_image_infer'], capsys)
    assert_one_line_error(result, 'large_image_infer', 'uses sahi\'s postprocess',
                          'pip install "sahi>=0.12,<0.13"', 'or merge with soft_nms')
    assert not (tmp_path / 'out' / 'detections.json').exists()

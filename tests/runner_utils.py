"""Building small real Runner configs on the generated shapes data, reading their TensorBoard
events back, comparing training states bit for bit, loading the tools as modules and running
commands under a time limit (imported by tests)."""
import copy
import glob
import importlib
import importlib.util
import os
import os.path as osp
import signal
import subprocess
import sys
import time
import types
from types import ModuleType
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

import pytest

from conftest import DEMO_CONFIG, REPO_ROOT


def tiny_train_cfg(data_root: str, work_dir: str, epochs: int = 2,
                   custom_hooks: Optional[List[dict]] = None, val_interval: int = 1,
                   vis_backends: Optional[List[dict]] = None, seed: int = 0) -> Config:
    """The demo config shrunk to the small ``shapes_data`` set: batch 4, no workers, no EMA,
    deterministic, ``epochs`` epochs with validation every ``val_interval``."""
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed, deterministic=True)
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = val_interval
    cfg.default_hooks.param_scheduler.max_epochs = epochs
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = data_root
        loader.num_workers = 0
        loader.persistent_workers = False
    cfg.train_dataloader.batch_size = 4
    cfg.val_dataloader.batch_size = 4
    cfg.val_dataloader.dataset.batch_shapes_cfg.batch_size = 4
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.val_evaluator.ann_file = data_root + 'annotations/val.json'
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)
    cfg.custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
    cfg.custom_hooks = list(custom_hooks or [])
    cfg.visualizer.vis_backends = vis_backends or [dict(type='LocalVisBackend'),
                                                   dict(type='TensorboardVisBackend')]
    return cfg


def replace_key(node, key, value) -> None:
    """Sets ``key`` to ``value`` wherever it occurs in a nested config (e.g. ``num_classes`` in
    a head and its assigners)."""
    if isinstance(node, dict):
        for name in node:
            if name == key:
                node[name] = value
            else:
                replace_key(node[name], key, value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            replace_key(item, key, value)


def read_events(work_dir: str):
    """The TensorBoard EventAccumulator of the single event file under ``work_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    files = glob.glob(osp.join(work_dir, '**', 'events.out.tfevents.*'), recursive=True)
    if len(files) != 1:
        raise AssertionError(f'expected one event file under {work_dir}, found {files}')
    acc = EventAccumulator(files[0], size_guidance={'images': 0, 'scalars': 0,
                                                    'histograms': 0})
    acc.Reload()
    return acc


def image_steps(acc, tag: str) -> List[int]:
    return [event.step for event in acc.Images(tag)]


def clone_tree(obj):
    """A copy of a nested state (state dicts, optimizer state) with every tensor cloned."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tree(v) for v in obj)
    return obj


def assert_same_tree(a, b, where=''):
    """Asserts two nested states are equal bit for bit (tensors with ``torch.equal``, same
    dtype and shape), naming the first item that differs."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f'{where} differs (max abs diff ' \
            f'{(a.double() - b.double()).abs().max().item()})'
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


class MetricsRecorder(Hook):
    """Keeps the validation metrics of every epoch (register it at priority ``LOWEST``)."""

    def __init__(self):
        self.metrics = []

    def after_val_epoch(self, runner, metrics=None):
        self.metrics.append(dict(metrics or {}))


def train_and_record(cfg: Config, reset_singletons):
    """Trains a Runner built from ``cfg`` (the MMEngine singletons cleared first). Returns the
    runner and its state at the end: weights and buffers, optimizer state, the losses logged,
    every epoch's validation metrics and the torch and numpy RNG states (compare two with
    :func:`assert_same_trainings`)."""
    import numpy as np
    from mmengine.runner import Runner
    reset_singletons()
    runner = Runner.from_cfg(cfg)
    recorder = MetricsRecorder()
    runner.register_hook(recorder, priority='LOWEST')
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    return runner, dict(model=clone_tree(runner.model.state_dict()),
                        optimizer=clone_tree(runner.optim_wrapper.state_dict()),
                        losses=list(losses), metrics=recorder.metrics,
                        torch_rng=torch.get_rng_state(),
                        numpy_rng=np.random.get_state()[1].copy())


def assert_same_trainings(plain: dict, hooked: dict) -> None:
    """Two :func:`train_and_record` states are equal bit for bit, and the optimizer stepped
    (its state exists: equal weights are not just the initial ones)."""
    import numpy as np
    assert plain['optimizer']['state']
    assert_same_tree(plain['model'], hooked['model'], 'state_dict')
    assert_same_tree(plain['optimizer'], hooked['optimizer'], 'optimizer')
    assert plain['losses'] == hooked['losses']
    assert plain['metrics'] == hooked['metrics']
    assert torch.equal(plain['torch_rng'], hooked['torch_rng'])
    assert np.array_equal(plain['numpy_rng'], hooked['numpy_rng'])


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` imported as a module (the tools are scripts, not a package), e.g.
    ``load_tool('boxam_vis').main([...])`` runs the tool in this process."""
    path = osp.join(REPO_ROOT, 'tools', f'{name}.py')
    if not osp.isfile(path):
        raise ValueError(f'no tool {name!r}: {path} does not exist')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool_in_process(name: str, args: Sequence[str], capsys) -> types.SimpleNamespace:
    """What running ``tools/<name>.py args`` gives (``returncode``, ``stderr``), from the tool's
    ``main`` called in this process (a fresh process costs seconds of imports); for calls that
    end in an error (``SystemExit``)."""
    capsys.readouterr()
    main = importlib.import_module(f'mmyolo_vis_hooks.cli.{name}').main
    with pytest.raises(SystemExit) as info:
        main(list(args), prog=f'{name}.py')
    return types.SimpleNamespace(returncode=info.value.code, stderr=capsys.readouterr().err)


def assert_one_line_error(result, tool: str, *fragments: str) -> str:
    """Asserts the tool's one-line error: exit code 2, one stderr line
    ``<tool>.py: error: ...`` holding every fragment, no traceback. Returns the line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f'{tool}.py: error: '), lines[0]
    assert 'Traceback' not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_bounded_together(cmds: Sequence[Sequence[str]], timeout: float,
                         env: Optional[dict] = None) -> List[Tuple[int, str]]:
    """Starts every command at once, each in its own process group; if they have not all
    finished within ``timeout`` seconds, kills every group still running and fails. Returns
    each one's exit code and output (stdout and stderr)."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, start_new_session=True) for cmd in cmds]
    deadline = time.monotonic() + timeout
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=max(deadline - time.monotonic(), 0.01))[0])
    except subprocess.TimeoutExpired:
        late = [k for k, proc in enumerate(procs) if proc.poll() is None]
        for k in late:
            os.killpg(procs[k].pid, signal.SIGKILL)
        out = procs[late[0]].communicate()[0]
        pytest.fail(f'{[list(cmds[k][:3]) for k in late]} did not finish within {timeout} s '
                    f'(a rank waiting on another?)\n{out[-4000:]}')
    return [(proc.returncode, out) for proc, out in zip(procs, outs)]


def run_bounded(cmd: Sequence[str], timeout: float, env: Optional[dict] = None
                ) -> Tuple[int, str]:
    """Runs ``cmd`` in its own process group; on timeout kills that group (torchrun and its
    workers) and fails. Returns the exit code and the output (stdout and stderr)."""
    return run_bounded_together([cmd], timeout, env)[0]


def torchrun_launcher() -> List[str]:
    """The venv's ``torchrun``, or ``python -m torch.distributed.run``."""
    torchrun = osp.join(osp.dirname(sys.executable), 'torchrun')
    return [torchrun] if osp.isfile(torchrun) else [sys.executable, '-m',
                                                     'torch.distributed.run']

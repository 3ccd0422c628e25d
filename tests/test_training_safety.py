"""Training safety: the visualization hooks never disturb training.

Real Runners on the generated shapes data: training is bit-for-bit the same with and without
the hooks (EMA included); 2-process CPU training under torchrun with visualizations on rank 0
only; resume logs each epoch once; faults during training warn (or raise with ``strict=True``)
while training goes on; repeated visualizations neither grow memory nor leave hooks behind.
(Bad configuration: tests/hooks/test_bad_configuration.py.)
"""
import copy
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import types
import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.visualization.vis_backend import BaseVisBackend
from torch import nn

from helpers import DEMO_CONFIG, REPO_ROOT
from helpers.runner import MetricsRecorder, assert_same_tree, clone_tree, tiny_train_cfg
from helpers.tools import run_bounded as _run_bounded, torchrun_launcher

from mmyolo.registry import VISBACKENDS
from mmyolo_vis_hooks.hooks import VisualizationWarning

pytestmark = pytest.mark.slow  # every test trains or validates a real Runner

TRAIN_IMAGES = 8  # 2 iterations of batch 4 per epoch: enough to move weights, BN and EMA


# --------------------------------------------------------------------------- helpers


def _vis_hooks(**common) -> list:
    """FeatMapVisHook and BoxAMVisHook, sharing ``common``.

    BoxAMVisHook gets ``score_thr=0``: the briefly trained models score below the default
    0.3, and with no box to explain its gradient path would not run at all."""
    return [dict(type='FeatMapVisHook', target_layers=['neck', 'backbone.stem'], **common),
            dict(type='BoxAMVisHook', score_thr=0.0, topk=2, **common)]


def _demo_ema_hook() -> dict:
    """The EMAHook entry of the demo config (``tiny_train_cfg`` replaces custom_hooks)."""
    hooks = Config.fromfile(DEMO_CONFIG).custom_hooks
    ema = [dict(h) for h in hooks if h['type'] == 'EMAHook']
    assert len(ema) == 1, hooks
    return ema[0]


def _train_cfg(data_root, work_dir, epochs, hooks, ema=False, **kwargs) -> Config:
    cfg = tiny_train_cfg(data_root, work_dir, epochs=epochs,
                         custom_hooks=([_demo_ema_hook()] if ema else []) + list(hooks), **kwargs)
    cfg.train_dataloader.dataset.indices = TRAIN_IMAGES
    return cfg


def _event_files(work_dir):
    return sorted(glob.glob(osp.join(work_dir, '**', 'events.out.tfevents.*'), recursive=True))


def _image_steps(work_dir) -> dict:
    """Per image tag, the steps of every image in ALL event files under ``work_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    steps = defaultdict(list)
    for path in _event_files(work_dir):
        acc = EventAccumulator(path, size_guidance={'images': 0})
        acc.Reload()
        for tag in acc.Tags()['images']:
            steps[tag] += [event.step for event in acc.Images(tag)]
    return dict(steps)


def _scalar_steps(work_dir, tag) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    steps = []
    for path in _event_files(work_dir):
        acc = EventAccumulator(path, size_guidance={'scalars': 0})
        acc.Reload()
        if tag in acc.Tags()['scalars']:
            steps += [event.step for event in acc.Scalars(tag)]
    return steps


def _vis_tags(steps: dict) -> dict:
    return {tag: s for tag, s in steps.items() if tag.split('/')[0] in ('featmap', 'boxam')}


def _hook_of(runner, type_name):
    return next(h for h in runner.hooks if type(h).__name__ == type_name)


# --------------------------------------------------------------------------- bit for bit


def test_training_bit_for_bit_with_and_without_hooks(tmp_path, shapes_data, reset_singletons,
                                                    fast_config_dump):
    """3 deterministic epochs with EMA: weights, BN buffers, EMA state, optimizer state, val
    metrics and RNG are identical with the hooks (interval=1) and without."""

    # One config for both runs: the demo config may be edited while the test runs.
    base = _train_cfg(shapes_data, '', 3, [], ema=True)

    def train(work, hooks):
        reset_singletons()
        cfg = copy.deepcopy(base)
        cfg.work_dir = str(tmp_path / work)
        cfg.custom_hooks += hooks
        runner = Runner.from_cfg(cfg)
        recorder = MetricsRecorder()
        runner.register_hook(recorder, priority='LOWEST')
        runner.train()
        ema = _hook_of(runner, 'EMAHook')
        return dict(model=clone_tree(runner.model.state_dict()),
                    ema=clone_tree(ema.ema_model.state_dict()),
                    optimizer=clone_tree(runner.optim_wrapper.state_dict()),
                    metrics=recorder.metrics,
                    torch_rng=torch.get_rng_state(), numpy_rng=np.random.get_state()[1].copy())

    hooks = _vis_hooks(interval=1, num_images=2)
    hooked = train('hooked', hooks)
    plain = train('plain', [])

    # The hooks really ran every epoch (else the comparison proves nothing).
    steps = _vis_tags(_image_steps(str(tmp_path / 'hooked')))
    assert steps and all(s == [1, 2, 3] for s in steps.values()), steps
    assert {tag.split('/')[0] for tag in steps} == {'featmap', 'boxam'}
    # BoxAMVisHook explained boxes (its gradient path ran): the score is logged only then.
    assert _scalar_steps(str(tmp_path / 'hooked'), 'boxam/energy_in_gt/gradcam') == [1, 2, 3]
    assert not _vis_tags(_image_steps(str(tmp_path / 'plain')))
    assert len(plain['metrics']) == 3 and 'coco/bbox_mAP' in plain['metrics'][0]
    # BN statistics really moved and the EMA differs from the raw weights: both are checked.
    assert any('running_mean' in k for k in plain['model'])
    assert not all(torch.equal(plain['model'][k], plain['ema'][f'module.{k}'])
                   for k in plain['model'] if f'module.{k}' in plain['ema'])

    assert_same_tree(plain['model'], hooked['model'], 'state_dict')
    assert_same_tree(plain['ema'], hooked['ema'], 'ema_state_dict')
    assert_same_tree(plain['optimizer'], hooked['optimizer'], 'optimizer')
    assert plain['metrics'] == hooked['metrics']
    assert torch.equal(plain['torch_rng'], hooked['torch_rng'])
    assert np.array_equal(plain['numpy_rng'], hooked['numpy_rng'])


# --------------------------------------------------------------------------- distributed


def test_distributed_cpu_training(tmp_path, shapes_data):
    """torchrun, 2 processes, gloo on CPU, MMEngine launcher 'pytorch': training with the hooks
    completes within the timeout, only rank 0 sends images, one event file is written."""
    work = str(tmp_path / 'work')
    os.makedirs(work)
    num_images = 4
    hooks = _vis_hooks(interval=1, num_images=num_images)
    launcher = torchrun_launcher()
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get('PYTHONPATH', '')]))
    code, out = _run_bounded(
        launcher + ['--standalone', '--nproc_per_node', '2',
                    osp.join(REPO_ROOT, 'tests', 'dist_train_worker.py'), shapes_data, work,
                    json.dumps(hooks)], timeout=600, env=env)
    assert code == 0, out[-6000:]

    ranks = []
    for rank in (0, 1):
        with open(osp.join(work, f'rank{rank}.json')) as f:
            ranks.append(json.load(f))
    for record in ranks:
        assert record['distributed'] and record['world_size'] == 2
        assert record['wrapped'] == 'MMDistributedDataParallel'
        assert record['epoch'] == 2
    # Every rank chose the same images; some lie in rank 1's validation shard (odd dataset
    # indices under DefaultSampler), which rank 0 forwards itself without asking rank 1.
    assert ranks[0]['samples'] == ranks[1]['samples']
    feat_indices = ranks[0]['samples']['FeatMapVisHook']['indices']
    assert any(i % 2 for i in feat_indices) and any(i % 2 == 0 for i in feat_indices)
    assert ranks[1]['images_sent'] == 0
    assert ranks[0]['images_sent'] > 0
    # Rank 1 finished training while rank 0 was still drawing its last epoch: it did not wait
    # for the hooks (a collective or barrier in them would hold it until rank 0 is done).
    assert ranks[1]['train_end'] < ranks[0]['last_hook_end']

    (event_file, ) = _event_files(work)  # rank 1 opened no writer
    steps = _vis_tags(_image_steps(work))
    assert ranks[0]['images_sent'] == sum(len(s) for s in steps.values())
    for name in ranks[0]['samples']['FeatMapVisHook']['names']:
        for key in ('neck[0]', 'neck[1]', 'neck[2]', 'backbone.stem'):
            assert steps.pop(f'featmap/{name}/{key}') == [1, 2], (name, key)
    for name in ranks[0]['samples']['BoxAMVisHook']['names']:
        assert steps.pop(f'boxam/{name}/gradcam') == [1, 2], name
    assert not steps, steps


# --------------------------------------------------------------------------- resume


def test_resume_logs_each_epoch_once(tmp_path, shapes_data, reset_singletons,
                                     fast_config_dump):
    """2 epochs, stop, resume from epoch_2.pth to 4 epochs in the same work_dir: over all event
    files every visualization tag has steps 1, 2, 3, 4 exactly once."""
    work = str(tmp_path / 'work')
    hooks = _vis_hooks(interval=1, num_images=2)
    base = _train_cfg(shapes_data, work, 4, hooks, ema=True)  # read once for both runs
    cfg = copy.deepcopy(base)
    cfg.train_cfg.max_epochs = 2
    Runner.from_cfg(cfg).train()
    first = _vis_tags(_image_steps(work))
    assert first and all(s == [1, 2] for s in first.values()), first

    reset_singletons()
    cfg = copy.deepcopy(base)
    cfg.resume = True
    cfg.load_from = osp.join(work, 'epoch_2.pth')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 4
    assert len(_event_files(work)) == 2  # one per run, in the runs' own timestamp dirs
    steps = _vis_tags(_image_steps(work))
    assert steps.keys() == first.keys()
    for tag, tag_steps in steps.items():
        assert sorted(tag_steps) == [1, 2, 3, 4], (tag, tag_steps)


# --------------------------------------------------------------------------- faults


@VISBACKENDS.register_module(force=True)
class FailingVisBackend(BaseVisBackend):
    """A backend whose image writes fail (a full disk, a lost connection), while ``broken``."""

    broken = True

    @property
    def experiment(self):
        return self

    def _init_env(self):
        pass

    def add_image(self, name, image, step=0, **kwargs):
        if type(self).broken:
            raise OSError(f'no space left on device writing {name}')


class _BreakImageFiles(Hook):
    """Between the validation forward (which read the files) and the vis hooks' drawing: moves
    one image away and truncates another, as a concurrent clean-up or a failing disk would.
    The validation loop itself would fail on them otherwise, which is not the hooks' doing."""

    def __init__(self, missing=(), corrupt=()):
        self.missing, self.corrupt = list(missing), list(corrupt)
        self.saved = {}

    def after_val_epoch(self, runner, metrics=None):
        for path in self.missing:
            os.rename(path, path + '.away')
        for path in self.corrupt:
            with open(path, 'rb') as f:
                self.saved[path] = f.read()
            with open(path, 'wb') as f:
                f.write(self.saved[path][:len(self.saved[path]) // 3])


class _RestoreImageFiles(Hook):
    """After the vis hooks: puts the files back for the next epoch."""

    def __init__(self, breaker):
        self.breaker = breaker

    def after_val_epoch(self, runner, metrics=None):
        for path in self.breaker.missing:
            os.rename(path + '.away', path)
        for path, data in self.breaker.saved.items():
            with open(path, 'wb') as f:
                f.write(data)
        self.breaker.saved = {}


def _add_probe_layers(model):
    """Two probe layers on the stem, as target layers: ``backbone.stem.nan_probe`` sees the
    stem output with NaN and Inf injected in eval mode (its result is discarded),
    ``backbone.stem.empty_probe`` gets a slice of it with zero height and its sum (over no
    element: 0) is added to the stem output, so the box scores depend on it as BoxAMVisHook
    requires. The state dict and the network's outputs are unchanged (Identity has no
    parameters)."""
    stem = model.backbone.stem
    stem.nan_probe = nn.Identity()
    stem.empty_probe = nn.Identity()
    stem_forward = stem.forward

    def forward(self, x):
        out = stem_forward(x)
        self.nan_probe(out)
        return out + self.empty_probe(out[:, :, :0]).sum()

    stem.forward = types.MethodType(forward, stem)
    stem.nan_probe.register_forward_hook(_inject_nan_in_eval)


def _inject_nan_in_eval(module, inputs, output):
    """Forward hook: in eval mode the output gets a NaN and an Inf."""
    if module.training:
        return None
    output = output.clone()
    output[:, 0, 0, 0] = float('nan')
    output[:, 1, 1, 1] = float('inf')
    return output


def _copy_data(shapes_data, tmp_path):
    """The faults edit image files: work on a copy of the session's data."""
    root = str(tmp_path / 'data')
    shutil.copytree(shapes_data, root)
    return root + '/'


def _val_path(data_root, number):
    """``val/val_<number>.png``. Validation dataset indices 0-3 are files 0-3, in the order of
    the batch-shape policy (by aspect ratio); index 0 is val_00000."""
    return osp.join(data_root, 'val', f'val_{number:05d}.png')


def test_faults_warn_and_training_goes_on(tmp_path, shapes_data, fast_config_dump):
    """A missing and a corrupt image file, NaN/Inf activations, a zero-size map, a backend that
    fails to write, no detection above score_thr: VisualizationWarnings, the broken items are
    skipped (or drawn and warned about), training and checkpointing go on."""
    data_root = _copy_data(shapes_data, tmp_path)
    work = str(tmp_path / 'work')
    indices = [0, 1, 2, 3]
    hooks = [dict(type='FeatMapVisHook', img_indices=indices,
                  target_layers=['neck.out_layers[0]', 'backbone.stem.nan_probe',
                                 'backbone.stem.empty_probe'],
                  score_thr=1.0)]  # no detection reaches it: the maps are drawn without boxes
    hooks += [dict(type='BoxAMVisHook', img_indices=indices, score_thr=0.0, topk=1),
              # No box reaches 1.0: a warning, the plain image is logged (tag .../eigencam).
              dict(type='BoxAMVisHook', img_indices=indices, method='eigencam', score_thr=1.0,
                   log_energy=False)]
    cfg = _train_cfg(data_root, work, 2, hooks,
                     vis_backends=[dict(type='LocalVisBackend'),
                                   dict(type='TensorboardVisBackend'),
                                   dict(type='FailingVisBackend')])
    runner = Runner.from_cfg(cfg)
    _add_probe_layers(runner.model)
    breaker = _BreakImageFiles(missing=[_val_path(data_root, 0)],
                               corrupt=[_val_path(data_root, 1)])
    runner.register_hook(breaker, priority='VERY_HIGH')
    runner.register_hook(_RestoreImageFiles(breaker), priority='VERY_LOW')
    FailingVisBackend.broken = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        runner.train()

    # Training went on: both epochs trained, validated and checkpointed.
    assert runner.epoch == 2 and runner.iter == 2 * TRAIN_IMAGES // 4
    assert osp.isfile(osp.join(work, 'epoch_1.pth')) and osp.isfile(osp.join(work, 'epoch_2.pth'))

    messages = [str(w.message) for w in caught if issubclass(w.category, VisualizationWarning)]

    def count(*parts):
        return sum(all(p in m for p in parts) for m in messages)

    # 3 hooks x 2 epochs.
    assert count('skipped image val_00000', 'FileNotFoundError') == 3 * 2, messages
    assert count('skipped image val_00001') == 3 * 2, messages
    assert count('FeatMapVisHook: skipped image val_00001', 'cannot decode') == 2, messages
    for name in ('val_00002', 'val_00003'):
        assert count('layer backbone.stem.nan_probe has NaN/Inf', name) == 2, messages
        assert count('skipped layer backbone.stem.empty_probe', name, 'empty') == 2, messages
        assert count(f'eigencam: no box above score_thr=1.0 on {name}') == 2, messages
    # The drawable images (2 images x (2 feature-map layers, 1 CAM grid, 1 plain image without
    # boxes)) x 2 epochs reached the backends: the failing one warned for each, the others
    # still wrote them.
    drawn = {f'featmap/{name}/{layer}' for name in ('val_00002', 'val_00003')
             for layer in ('neck.out_layers[0]', 'backbone.stem.nan_probe')}
    drawn |= {f'boxam/{name}/{method}' for name in ('val_00002', 'val_00003')
              for method in ('gradcam', 'eigencam')}
    assert count('backend FailingVisBackend failed to write image') == 2 * len(drawn), messages

    steps = _image_steps(work)
    assert sorted(steps) == sorted(drawn)
    assert all(s == [1, 2] for s in steps.values()), steps
    pngs = glob.glob(osp.join(work, '*', 'vis_data', 'vis_image', '*', '*', '*.png'))
    assert len(pngs) == 2 * len(drawn)


STRICT_FAULTS = [
    # (hook, fault, message)
    ('FeatMapVisHook', 'missing', r'skipped image val_00000 \(FileNotFoundError: image not found'),
    ('FeatMapVisHook', 'corrupt', r'skipped image val_00000 \(ValueError: cannot decode image'),
    ('FeatMapVisHook', 'nan', r'layer backbone\.stem\.nan_probe has NaN/Inf activations on '
     r'val_00000'),
    ('FeatMapVisHook', 'empty', r'skipped layer backbone\.stem\.empty_probe on val_00000 '
     r'\(ValueError: empty feature map'),
    ('FeatMapVisHook', 'backend', r'backend FailingVisBackend failed to write image .*OSError: '
     r'no space left'),
    ('BoxAMVisHook', 'missing', r'skipped image val_00000 \(FileNotFoundError'),
    ('BoxAMVisHook', 'corrupt', r'skipped image val_00000 \(AssertionError: failed to load'),
    ('BoxAMVisHook', 'empty', r'gradcam failed on val_00000 \(ValueError: empty feature maps '
     r"\(no pixels\) from the target layers: \{'backbone\.stem\.empty_probe': \(1, 16, 0, "),
    ('BoxAMVisHook', 'backend', r'backend FailingVisBackend failed to write image .*OSError: '
     r'no space left'),
    ('BoxAMVisHook', 'nan', r'gradcam: NaN/Inf in the maps of val_00000; drawn with them '
     r'zeroed'),
    ('BoxAMVisHook', 'no_detection', r'gradcam: no box above score_thr=1\.0 on val_00000; the '
     r'plain image is logged'),
]


def _strict_id(case):
    values = case.values if hasattr(case, 'values') else case
    return f'{values[0]}-{values[1]}'


@pytest.mark.parametrize('hook_type, fault, message', STRICT_FAULTS,
                         ids=[_strict_id(c) for c in STRICT_FAULTS])
def test_faults_raise_with_strict(tmp_path, shapes_data, fast_config_dump, hook_type, fault,
                                  message):
    data_root = _copy_data(shapes_data, tmp_path)
    hook = dict(type=hook_type, img_indices=[0], strict=True)
    if hook_type == 'FeatMapVisHook':
        layer = {'nan': 'backbone.stem.nan_probe', 'empty': 'backbone.stem.empty_probe'}.get(
            fault, 'neck.out_layers[0]')
        hook.update(target_layers=[layer], log_stats=False)
    else:
        hook.update(topk=1, score_thr=1.0 if fault == 'no_detection' else 0.0)
        if fault == 'empty':
            hook.update(target_layers=['backbone.stem.empty_probe'])
    cfg = _train_cfg(data_root, str(tmp_path / 'work'), 1, [hook],
                     vis_backends=[dict(type='TensorboardVisBackend'),
                                   dict(type='FailingVisBackend')])
    runner = Runner.from_cfg(cfg)
    _add_probe_layers(runner.model)
    if hook_type == 'BoxAMVisHook' and fault == 'nan':  # a layer the boxes depend on
        runner.model.neck.out_layers[2].register_forward_hook(_inject_nan_in_eval)
    breaker = _BreakImageFiles(missing=[_val_path(data_root, 0)] if fault == 'missing' else [],
                               corrupt=[_val_path(data_root, 0)] if fault == 'corrupt' else [])
    runner.register_hook(breaker, priority='VERY_HIGH')
    FailingVisBackend.broken = fault == 'backend'
    try:
        with pytest.raises(RuntimeError, match=message):
            runner.val()
    finally:
        FailingVisBackend.broken = True


# --------------------------------------------------------------------------- memory


def test_repeated_visualizations_keep_memory_and_hooks(tmp_path, shapes_data):
    """30 validation runs with the hooks grow the RSS of a fresh process by at most 50 MB after
    3 warm-up runs, and leave no forward/backward hook on any module of the model.

    Measured by ``benchmarks/bench_memory.py`` in its own process: in this test session's
    process, memory freed by earlier tests would absorb a leak before the RSS grows."""
    result = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'benchmarks', 'bench_memory.py'), '--variant',
         'hooks', '--json', '--runs', '30', '--warmup', '3', '--val-images', '2',
         '--num-images', '2', '--cam-images', '1', '--data-root', shapes_data.rstrip('/')],
        capture_output=True, text=True, timeout=1200, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"RSS growth over 30 validations with visualization: {measured['growth']:.1f} MB "
          f"(from {measured['start']:.0f} MB)")
    # Every run really drew: 2 images x 6 feature maps + 1 box-CAM grid.
    assert measured['images_per_run'] == 2 * 6 + 1
    assert measured['growth'] <= 50, measured
    assert measured['changed_hooks'] == {}

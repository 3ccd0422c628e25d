"""The main job (tools/run_demo.py): a real Runner training on the demo data that logs to
TensorBoard and resumes under ``weights_only=True``; its data generation and argument checks.
"""
import contextlib
import glob
import os
import os.path as osp

import numpy as np
import pytest
import torch

from helpers import REPO_ROOT
from helpers.tools import load_tool


@pytest.fixture(scope='module')
def small_demo_data(tmp_path_factory):
    """The main job's data layout (``shapes/`` and ``large/``), small: 16 train, 8 val."""
    from mmyolo_vis_hooks.data.synthetic_shapes import (SplitSpec, generate_large_image,
                                                        generate_split)
    root = str(tmp_path_factory.mktemp('demo_data'))
    generate_split(osp.join(root, 'shapes'), 'train', SplitSpec(16), seed=0)
    generate_split(osp.join(root, 'shapes'), 'val', SplitSpec(8), seed=0)
    generate_large_image(osp.join(root, 'large'), seed=0, width=400, height=300, num_objects=5)
    return root


def _scalar_steps(event_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(event_dir, size_guidance={'scalars': 0})
    acc.Reload()
    if tag not in acc.Tags()['scalars']:
        return {}
    return {e.step: e.value for e in acc.Scalars(tag)}


@contextlib.contextmanager
def _torch_default_allow_list():
    """torch's own allow-list only (the package's additions removed, then restored)."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.add_safe_globals(saved)


FAST_OPTIONS = [
    '--cfg-options', 'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
    'default_hooks.logger.interval=1', 'train_cfg.val_interval=1'
]


@pytest.fixture
def restore_torch_threads():
    """run_demo.main sets torch's thread count (--threads, default 1); later tests get theirs
    back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # trains a real Runner twice (runs run_demo.main in this process)
def test_main_job_trains_logs_and_resumes_weights_only(small_demo_data, tmp_path, monkeypatch,
                                                       reset_singletons, capsys,
                                                       restore_torch_threads):
    run_demo = load_tool('run_demo')
    work_dir = str(tmp_path / 'work')
    common = ['--data-dir', small_demo_data, '--work-dir', work_dir]

    # every torch.load of the run (resume included) keeps weights_only=True
    real_load, weights_only_args = torch.load, []

    def spy_load(*args, **kwargs):
        weights_only_args.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy_load)

    first = run_demo.main(common + ['--epochs', '1'] + FAST_OPTIONS)
    printed = capsys.readouterr().out
    iters_per_epoch = 16 // 4
    assert first['checkpoint'] == osp.join(work_dir, 'epoch_1.pth')
    assert 0.0 <= first['metrics']['coco/bbox_mAP_50'] <= 1.0
    assert 'val bbox mAP@50:' in printed and first['checkpoint'] in printed
    tb_dir = first['tensorboard_dir']
    assert f'tensorboard --logdir {tb_dir} --samples_per_plugin images=' in printed
    n_images = int(printed.split('--samples_per_plugin images=')[1].split()[0])
    assert n_images >= 1
    assert glob.glob(osp.join(tb_dir, 'events.out.tfevents.*'))
    losses = _scalar_steps(tb_dir, 'loss')
    assert sorted(losses) == list(range(1, iters_per_epoch + 1))
    assert all(np.isfinite(v) and v > 0 for v in losses.values())
    assert set(_scalar_steps(tb_dir, 'coco/bbox_mAP_50')) == {1}
    # the printed --samples_per_plugin keeps every logged image step of every tag
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(tb_dir, size_guidance={'images': 0})
    acc.Reload()
    for tag in acc.Tags()['images']:
        assert len({e.step for e in acc.Images(tag)}) <= n_images, tag

    # the checkpoint holds nothing outside the allow-list
    from mmyolo_vis_hooks.runtime.checkpoint import safe_global_names
    with _torch_default_allow_list():
        beyond_torch = torch.serialization.get_unsafe_globals_in_checkpoint(first['checkpoint'])
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in beyond_torch
    assert set(beyond_torch) <= set(safe_global_names()), set(beyond_torch)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(first['checkpoint']) == []

    reset_singletons()
    second = run_demo.main(common + ['--epochs', '2', '--resume'] + FAST_OPTIONS)
    assert second['checkpoint'] == osp.join(work_dir, 'epoch_2.pth')
    assert second['tensorboard_dir'] != tb_dir
    resumed_losses = _scalar_steps(second['tensorboard_dir'], 'loss')
    assert sorted(resumed_losses) == list(range(iters_per_epoch + 1, 2 * iters_per_epoch + 1))
    assert set(_scalar_steps(second['tensorboard_dir'], 'coco/bbox_mAP_50')) == {2}
    meta = real_load(second['checkpoint'], weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (2, 2 * iters_per_epoch)
    assert weights_only_args and False not in weights_only_args


def test_main_job_generates_missing_data(tmp_path, monkeypatch):
    from mmyolo_vis_hooks import demo
    calls = []
    monkeypatch.setattr(demo, 'generate_demo_data',
                        lambda out_dir, seed: calls.append((out_dir, seed)))
    assert demo.ensure_demo_data(str(tmp_path / 'data'), 5) is True
    assert calls == [(str(tmp_path / 'data'), 5)]
    for rel in demo.DATA_FILES:
        os.makedirs(osp.dirname(tmp_path / 'data' / rel), exist_ok=True)
        (tmp_path / 'data' / rel).write_text('{}')
    assert demo.ensure_demo_data(str(tmp_path / 'data'), 5) is False
    assert len(calls) == 1


def test_main_job_generates_the_dataset_its_config_names(tmp_path, monkeypatch):
    """A config's ``demo_dataset`` picks the generated data and the data root; the rotated
    demo's evaluator (DOTAMetric) gets no COCO file."""
    from mmyolo_vis_hooks import demo
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_rotated_demo_data
    data = str(tmp_path / 'data')
    calls = []
    monkeypatch.setattr(demo, 'generate_rotated_demo_data',
                        lambda out_dir, seed: calls.append((out_dir, seed)))
    cfg = demo.build_config(osp.join(REPO_ROOT, 'configs', 'demo', 'rtmdet_r_shapes.py'),
                            data_dir=data)
    assert demo.demo_dataset(cfg) == 'shapes_rotated'
    assert cfg.train_dataloader.dataset.data_root == osp.join(data, 'shapes_rotated') + '/'
    assert 'ann_file' not in cfg.val_evaluator
    assert demo.ensure_demo_data(data, 3, 'shapes_rotated') is True
    assert calls == [(osp.join(data, 'shapes_rotated'), 3)]
    generate_rotated_demo_data(osp.join(data, 'shapes_rotated'), seed=3, num_train=2,
                               num_val=2, large=False)
    assert demo.ensure_demo_data(data, 3, 'shapes_rotated') is False
    assert len(calls) == 1
    cfg.demo_dataset = 'nope'
    with pytest.raises(ValueError, match='demo_dataset'):
        demo.demo_dataset(cfg)


def test_main_job_generates_the_pose_data_of_the_pose_config(tmp_path, monkeypatch):
    """The YOLOX-pose demo (``demo_dataset = 'stick_figures'``): its data is generated when
    missing, its keypoint evaluator reads the val file of the data root, ``--epochs`` leaves
    MMEngine's ParamSchedulerHook (which takes no epochs) alone."""
    from mmyolo_vis_hooks import demo
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_pose_demo_data
    data = str(tmp_path / 'data')
    calls = []
    monkeypatch.setattr(demo, 'generate_pose_demo_data',
                        lambda out_dir, seed: calls.append((out_dir, seed)))
    cfg = demo.build_config(osp.join(REPO_ROOT, 'configs', 'demo', 'yolox_pose_shapes.py'),
                            data_dir=data, epochs=3)
    root = osp.join(data, 'stick_figures') + '/'
    assert demo.demo_dataset(cfg) == 'stick_figures'
    assert cfg.train_dataloader.dataset.data_root == root
    assert cfg.val_evaluator.ann_file == osp.join(root, 'annotations', 'val.json')
    assert cfg.train_cfg.max_epochs == 3 and 'max_epochs' not in cfg.default_hooks.param_scheduler
    assert demo.ensure_demo_data(data, 3, 'stick_figures') is True
    assert calls == [(osp.join(data, 'stick_figures'), 3)]
    generate_pose_demo_data(osp.join(data, 'stick_figures'), seed=3, num_train=1, num_val=1)
    assert demo.ensure_demo_data(data, 3, 'stick_figures') is False
    assert len(calls) == 1


def test_summary_reads_the_keypoint_evaluators_ap():
    """mmpose's CocoMetric (OKS) AP is reported, named as keypoint AP."""
    from mmyolo_vis_hooks import demo
    result = dict(metrics={'coco/AP .5': 0.9, 'coco/AP': 0.6}, train_seconds=60.0,
                  cpu_seconds=50.0, threads=1, cpus=2, checkpoint='c.pth', epochs=2, seed=0,
                  config='yolox_pose_shapes.py')
    assert demo.map_values(result['metrics']) == (0.9, 0.6)
    text = '\n'.join(demo.summary_lines(result))
    assert 'val keypoint AP@50 (OKS): 0.900   AP@[.5:.95]: 0.600' in text


def test_summary_reads_the_rotated_evaluators_map():
    """DOTAMetric's mAP@50 is reported as the COCO one; it has no mAP@[.5:.95] here."""
    from mmyolo_vis_hooks import demo
    result = dict(metrics={'dota/AP50': 0.9876}, train_seconds=60.0, cpu_seconds=50.0,
                  threads=1, cpus=2, checkpoint='c.pth', epochs=3, seed=0, config='r.py')
    assert demo.map_values(result['metrics']) == (0.9876, None)
    line = next(line for line in demo.summary_lines(result) if 'mAP@50' in line)
    assert line.split() == ['val', 'bbox', 'mAP@50:', '0.988', 'mAP@[.5:.95]:', '-']
    coco = {demo.MAP50_KEY: 0.5, demo.MAP_KEY: 0.25}
    assert demo.map_values(coco) == (0.5, 0.25) and demo.map_values({}) == (None, None)


def test_main_job_rejects_bad_numbers(capsys):
    run_demo = load_tool('run_demo')
    for flag in ('--epochs', '--threads'):
        with pytest.raises(SystemExit) as exit_info:
            run_demo.main([flag, '0'])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f'run_demo.py: error: {flag} must be a positive int, got 0'], err

"""The WandB, MLflow and DVCLive members of the activation-statistics backends, through a real
Runner, read back with each tracker's own reader: images per epoch, scalars per epoch,
histograms. A failing tracker warns and training goes on. ``sahi`` stays optional at import.

One training run (2 epochs, FeatMapVisHook with statistics and BoxAMVisHook) writes to the
three trackers at once; each read-back test reads its own tracker's store.
"""
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from mmengine.runner import Runner

from helpers.runner import tiny_train_cfg
from mmyolo_vis_hooks.backends import TrackerWarning
from mmyolo_vis_hooks.hooks import BoxAMVisHook, FeatMapVisHook
from mmyolo_vis_hooks.testing import clear_mmengine_singletons

EPOCHS = [1, 2]
NECK = ('neck[0]', 'neck[1]', 'neck[2]')
STATS = ('mean', 'std', 'dead_ratio')


@pytest.fixture(scope='module')
def tracker_run(shapes_data, demo_checkpoint, tmp_path_factory):
    """Trains 2 epochs with both hooks into WandB (offline), MLflow (SQLite) and DVCLive."""
    pytest.importorskip('wandb')
    pytest.importorskip('mlflow')
    pytest.importorskip('dvclive')
    root = tmp_path_factory.mktemp('trackers')
    old_cwd = os.getcwd()
    os.chdir(root)  # DVCLive and wandb look at the cwd (git repo, code): not the checkout
    clear_mmengine_singletons()
    hooks = [dict(type='FeatMapVisHook', num_images=1, target_layers=['neck']),
             dict(type='BoxAMVisHook', num_images=1, method='gradcam', topk=1, score_thr=0.2)]
    backends = [
        dict(type='LocalVisBackend'),
        dict(type='WandbActivationStatsVisBackend',
             init_kwargs=dict(mode='offline', project='trackers',
                              settings=dict(console='off'))),
        dict(type='MLflowActivationStatsVisBackend'),
        dict(type='DVCLiveActivationStatsVisBackend', init_kwargs=dict(save_dvc_exp=False)),
    ]
    try:
        cfg = tiny_train_cfg(shapes_data, str(root / 'work'), epochs=2, custom_hooks=hooks,
                             vis_backends=backends)
        cfg.load_from = demo_checkpoint  # trained weights: there are boxes to explain
        runner = Runner.from_cfg(cfg)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            runner.train()
        featmap = next(h for h in runner.hooks if isinstance(h, FeatMapVisHook))
        boxam = next(h for h in runner.hooks if isinstance(h, BoxAMVisHook))
        (vis_dir, ) = glob.glob(str(root / 'work' / '*' / 'vis_data'))
        yield dict(vis_dir=vis_dir, featmap_sample=featmap.samples[0].name,
                   boxam_sample=boxam.samples[0].name,
                   tracker_warnings=[str(w.message) for w in caught
                                     if issubclass(w.category, TrackerWarning)])
    finally:
        os.chdir(old_cwd)
        clear_mmengine_singletons()


def _expected_image_tags(run):
    tags = [f'featmap/{run["featmap_sample"]}/{key}' for key in NECK]
    return tags + [f'boxam/{run["boxam_sample"]}/gradcam']


@pytest.mark.slow
def test_no_tracker_failed(tracker_run):
    assert tracker_run['tracker_warnings'] == []


# ---------------------------------------------------------------------------------- MLflow
@pytest.mark.slow
def test_mlflow_read_back(tracker_run):
    from mlflow.tracking import MlflowClient

    from mmyolo_vis_hooks.backends.mlflow_backend import mlflow_name
    db = osp.join(tracker_run['vis_dir'], 'mlflow.db')
    assert osp.isfile(db)  # the SQLite store, not the deprecated file store
    client = MlflowClient(tracking_uri=f'sqlite:///{db}')
    exp = client.get_experiment_by_name('mmyolo')
    (run, ) = client.search_runs([exp.experiment_id])
    assert run.info.status == 'FINISHED'  # close ended the run
    run_id = run.info.run_id

    def steps(key):
        return [m.step for m in client.get_metric_history(run_id, key)]

    # Scalars per epoch: the statistics (names through mlflow_name), quantiles, BoxAM energy
    # and MMEngine's own validation metric.
    for key in NECK:
        name = mlflow_name(f'featmap_stats/{key}')
        assert name == f'featmap_stats/neck_{key[5]}'
        for stat in STATS + ('min', 'p05', 'p50', 'p95', 'max'):
            assert steps(f'{name}/{stat}') == EPOCHS, (name, stat)
        history = client.get_metric_history(run_id, f'{name}/dead_ratio')
        assert all(0.0 <= m.value <= 1.0 for m in history)
        low, mid, high = (client.get_metric_history(run_id, f'{name}/{q}')[-1].value
                          for q in ('min', 'p50', 'max'))
        assert low <= mid <= high
    assert steps('boxam/energy_in_gt/gradcam') == EPOCHS
    assert steps('coco/bbox_mAP') == EPOCHS

    # Images per epoch: mlflow.log_image(key, step) files images/<key>+step+<n>+....png.
    def walk(path):
        for item in client.list_artifacts(run_id, path):
            yield from walk(item.path) if item.is_dir else [item.path]

    files = list(walk(None))
    image_steps = {}
    for path in files:
        match = re.fullmatch(r'images/(.+)\+step\+(\d+)\+timestamp\+.*(?<!compressed)\.png',
                             path)
        if match:
            image_steps.setdefault(match.group(1), []).append(int(match.group(2)))
    for tag in _expected_image_tags(tracker_run):
        key = mlflow_name(tag).replace('/', '~')  # how MLflow names the image files
        assert sorted(image_steps.get(key, [])) == EPOCHS, (tag, sorted(image_steps))

    # Histograms per epoch: the fallback table artifacts.
    for key in NECK:
        name = mlflow_name(f'featmap_stats/{key}')
        tables = sorted(p for p in files if p.startswith(f'histograms/{name}/'))
        assert tables == [f'histograms/{name}/step_{s:06d}.csv' for s in EPOCHS]
        local = client.download_artifacts(run_id, tables[-1], str(tracker_run['vis_dir']))
        table = np.loadtxt(local, delimiter=',', skiprows=1)
        assert table.shape == (64, 3) and table[:, 2].sum() > 0
        assert np.all(table[:, 0] < table[:, 1])
    assert 'config.py' in files  # MLflowVisBackend's own config artifact still there


# ---------------------------------------------------------------------------------- WandB
def _wandb_records(vis_dir):
    """The offline run's records through WandB's own reader of the .wandb log
    (``wandb leet inspect --json``: one JSON record per line)."""
    (run_file, ) = glob.glob(osp.join(vis_dir, 'wandb', 'offline-run-*', 'run-*.wandb'))
    exe = shutil.which('wandb', path=osp.dirname(sys.executable)) or shutil.which('wandb')
    out = subprocess.run([exe, 'leet', 'inspect', '--json', run_file], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()], run_file


@pytest.mark.slow
def test_wandb_read_back(tracker_run):
    records, run_file = _wandb_records(tracker_run['vis_dir'])
    rows = [r['history']['item'] for r in records if r.get('type') == 'history']
    metrics = [r['metric'] for r in records if r.get('type') == 'metric']
    # MMEngine's step is the x-axis of every metric (mmengine#1692).
    assert dict(glob_name='*', step_metric='step') == {
        k: v for k, v in next(m for m in metrics if m.get('glob_name') == '*').items()
        if k in ('glob_name', 'step_metric')}

    def steps(key, type_=None):
        return sorted(row['step'] for row in rows
                      if (f'{key}._type' in row and row[f'{key}._type'] == type_)
                      or (type_ is None and key in row))

    files_dir = osp.join(osp.dirname(run_file), 'files')
    for tag in _expected_image_tags(tracker_run):
        assert steps(tag, 'image-file') == EPOCHS, tag
        for row in rows:
            if f'{tag}.path' in row:
                assert osp.isfile(osp.join(files_dir, row[f'{tag}.path']))
    for key in NECK:
        name = f'featmap_stats/{key}'
        assert steps(name, 'histogram') == EPOCHS  # wandb.Histogram
        hist = next(row for row in rows if f'{name}.values' in row)
        assert len(hist[f'{name}.values']) == 64 and len(hist[f'{name}.bins']) == 65
        for stat in STATS:
            assert steps(f'{name}/{stat}') == EPOCHS
    assert steps('boxam/energy_in_gt/gradcam') == EPOCHS
    assert steps('coco/bbox_mAP') == EPOCHS
    # Training losses keep MMEngine's iteration step (4 iterations per epoch).
    assert steps('loss') == list(range(1, 9))


# ---------------------------------------------------------------------------------- DVCLive
@pytest.mark.slow
def test_dvclive_read_back(tracker_run):
    from types import SimpleNamespace

    from dvclive.utils import parse_json, parse_metrics
    vis_dir = tracker_run['vis_dir']
    live = SimpleNamespace(plots_dir=osp.join(vis_dir, 'plots'),
                           metrics_file=osp.join(vis_dir, 'metrics.json'))
    history, summary = parse_metrics(live)  # every metrics .tsv and metrics.json

    def read_history(live_, metric):
        # dvclive.utils.read_history looks up the column by the full name; a .tsv of a
        # nested name has the last part as its column.
        rows = history[osp.join(live_.plots_dir, 'metrics', f'{metric}.tsv')]
        column = metric.rsplit('/', 1)[-1]
        return [int(r['step']) for r in rows], [float(r[column]) for r in rows]

    for key in NECK:
        name = f'featmap_stats/{key}'
        for stat in STATS + ('min', 'p50', 'max'):
            steps, values = read_history(live, f'{name}/{stat}')
            assert steps == EPOCHS, (name, stat)
        # The histogram of each epoch as a DVCLive custom plot.
        for step in EPOCHS:
            points = parse_json(osp.join(vis_dir, 'plots', 'custom', name, f'{step}.json'))
            points = points[next(iter(points))] if isinstance(points, dict) else points
            assert len(points) == 64 and sum(p['count'] for p in points) > 0
    assert read_history(live, 'boxam/energy_in_gt/gradcam')[0] == EPOCHS
    assert read_history(live, 'coco/bbox_mAP')[0] == EPOCHS
    # metrics.json, written by Live.end at close: the latest value of each metric.
    assert set(STATS) <= set(summary['featmap_stats']['neck[0]'])
    for tag in _expected_image_tags(tracker_run):
        pngs = sorted(os.listdir(osp.join(vis_dir, 'plots', 'images', tag)))
        assert pngs == [f'{s}.png' for s in EPOCHS], tag


# ---------------------------------------------------------------------------------- failures
@pytest.mark.slow
def test_failing_trackers_warn_and_training_goes_on(tmp_path, shapes_data, monkeypatch,
                                                    fast_config_dump):
    """MLflow's writes raise (a full disk) and its close fails like mmengine#1574; wandb
    cannot start. Training completes, with warnings, and the MLflow run is still ended."""
    mlflow = pytest.importorskip('mlflow')
    pytest.importorskip('wandb')

    def disk_full(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    for name in ('log_image', 'log_metric', 'log_metrics', 'log_text', 'log_artifact'):
        monkeypatch.setattr(mlflow, name, disk_full)
    ended, end_run = [], mlflow.end_run
    monkeypatch.setattr(mlflow, 'end_run', lambda *a, **k: ended.append(end_run(*a, **k)))
    hooks = [dict(type='FeatMapVisHook', num_images=1, target_layers=['neck.out_layers[0]'])]
    backends = [dict(type='LocalVisBackend'),
                dict(type='MLflowActivationStatsVisBackend'),
                dict(type='WandbActivationStatsVisBackend',
                     init_kwargs=dict(mode='no-such-mode'))]
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'work'), epochs=1, custom_hooks=hooks,
                         vis_backends=backends)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        runner = Runner.from_cfg(cfg)  # wandb fails here, at add_config
        runner.train()
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')  # training completed
    messages = {str(w.message) for w in caught if issubclass(w.category, TrackerWarning)}
    text = '\n'.join(sorted(messages))
    for expected in ('MLflowActivationStatsVisBackend.add_image failed (OSError',
                     'MLflowActivationStatsVisBackend.add_scalars failed (OSError',
                     'MLflowActivationStatsVisBackend.add_activation_stats failed (OSError',
                     'MLflowActivationStatsVisBackend.close failed (OSError',
                     'WandbActivationStatsVisBackend could not start'):
        assert expected in text, text
    assert ended and mlflow.active_run() is None  # the run was ended after the failed close
    # The other backend got everything.
    assert glob.glob(str(tmp_path / 'work' / '*' / 'vis_data' / 'vis_image' / 'featmap' / '*'))


def test_close_without_config_ends_the_run(tmp_path, monkeypatch):
    """mmengine#1144/#1574: MLflowVisBackend.close reads self.cfg, set only by add_config."""
    mlflow = pytest.importorskip('mlflow')
    from mmyolo_vis_hooks.backends import MLflowActivationStatsVisBackend
    backend = MLflowActivationStatsVisBackend(str(tmp_path / 'vis'))
    backend.add_scalars({'a': 1.0}, step=1)
    run_id = mlflow.active_run().info.run_id
    with warnings.catch_warnings():
        warnings.simplefilter('error', TrackerWarning)
        backend.close()
    assert mlflow.active_run() is None
    client = mlflow.tracking.MlflowClient(f'sqlite:///{tmp_path}/vis/mlflow.db')
    assert client.get_run(run_id).info.status == 'FINISHED'


def test_sahi_is_optional_at_import():
    code = ("import sys; sys.modules['sahi'] = None\n"
            "import mmyolo_vis_hooks, mmyolo_vis_hooks.hooks, mmyolo_vis_hooks.backends\n"
            "from mmengine.registry import VISBACKENDS  # the root: every scope finds it\n"
            "assert 'MLflowActivationStatsVisBackend' in VISBACKENDS.module_dict\n"
            "assert not [m for m in ('wandb', 'mlflow', 'dvclive') if m in sys.modules]\n")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]

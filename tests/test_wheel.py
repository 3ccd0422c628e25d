"""The wheel is a plugin a user installs, not a repo they clone.

Builds the wheel, installs it into a NEW venv that reuses this environment's stack (torch,
mmcv, mmdet, mmyolo, ... through a path entry, so no download) but not the checkout, and from
an empty folder: trains one iteration with a config that reaches the hooks only through the
installed package (the snippets imported from ``mmyolo_vis_hooks.configs``), and runs each
console script on generated data.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import sysconfig
import venv

import pytest

from helpers import DEMO_CHECKPOINT, REPO_ROOT

pytestmark = pytest.mark.slow

USER_CONFIG = '''\
_base_ = 'mmyolo::yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py'
# _base_ must come first: MMEngine reads a config whose first statement imports a non-builtin
# module as a pure-Python (read_base) config, which cannot inherit MMYOLO's configs.
from mmyolo_vis_hooks.configs._base_.boxam_vis import boxam_vis_hook  # noqa: E402
from mmyolo_vis_hooks.configs._base_.featmap_vis import (featmap_vis_hook,  # noqa: E402
                                                        vis_backends_with_stats)

custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
custom_hooks = [*_base_.custom_hooks, featmap_vis_hook, boxam_vis_hook]
visualizer = dict(vis_backends=[*vis_backends_with_stats, dict(type='TensorboardVisBackend')])
'''

TRAIN_SCRIPT = '''\
import json, sys
import mmyolo_vis_hooks
from mmengine.config import Config
from mmengine.runner import Runner

data_root, work_dir = sys.argv[1:3]
cfg = Config.fromfile('my_config.py')
scale = (96, 96)
classes = ('circle', 'square', 'triangle')
cfg.work_dir = work_dir
cfg.model.bbox_head.head_module.num_classes = 3
cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
cfg.default_hooks.param_scheduler.max_epochs = 1
cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'EMAHook']
for hook in cfg.custom_hooks:
    hook.update(num_images=2, max_size=96)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='YOLOv5KeepRatioResize', scale=scale),
    dict(type='LetterResize', scale=scale, allow_scale_up=False, pad_val=dict(img=114)),
    dict(type='mmdet.LoadAnnotations', with_bbox=True),
    dict(type='mmdet.PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                'scale_factor', 'pad_param')),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='YOLOv5KeepRatioResize', scale=scale),
    dict(type='LetterResize', scale=scale, allow_scale_up=True, pad_val=dict(img=114)),
    dict(type='mmdet.PackDetInputs'),
]
for loader, split, pipeline in ((cfg.train_dataloader, 'train', train_pipeline),
                                (cfg.val_dataloader, 'val', test_pipeline)):
    loader.batch_size = 8
    loader.num_workers = 0
    loader.persistent_workers = False
    loader.dataset = dict(type='YOLOv5CocoDataset', data_root=data_root,
                          ann_file=f'annotations/{split}.json',
                          data_prefix=dict(img=f'{split}/'), metainfo=dict(classes=classes),
                          filter_cfg=dict(filter_empty_gt=False, min_size=0),
                          pipeline=pipeline)
cfg.train_dataloader.collate_fn = dict(type='yolov5_collate')  # replaces the base's
cfg.test_dataloader = cfg.val_dataloader
cfg.val_evaluator.ann_file = data_root + 'annotations/val.json'
cfg.test_evaluator = cfg.val_evaluator
runner = Runner.from_cfg(cfg)
runner.train()
print(json.dumps(dict(iters=runner.iter, package=mmyolo_vis_hooks.__file__)))
'''


def _run(cmd, cwd, env, timeout=900):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (cmd, result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(venv python, its bin dir, env) with the built wheel installed and the stack reused."""
    root = tmp_path_factory.mktemp('wheel')
    dist = root / 'dist'
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
          '-w', str(dist), REPO_ROOT], cwd=str(root), env=dict(os.environ))
    wheels = glob.glob(str(dist / 'mmyolo_vis_hooks-*.whl'))
    assert len(wheels) == 1, wheels
    env_dir = root / 'venv'
    venv.EnvBuilder(with_pip=False).create(str(env_dir))
    python = str(env_dir / 'bin' / 'python')
    site = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
                           '["purelib"])'], capture_output=True, text=True,
                          check=True).stdout.strip()
    # The stack, as a plain path entry: its .pth files (this checkout's editable install among
    # them) are not processed from there, so the checkout stays out of reach.
    with open(osp.join(site, 'stack.pth'), 'w', encoding='utf-8') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env['PATH'] = f'{env_dir / "bin"}{os.pathsep}{env["PATH"]}'
    _run([sys.executable, '-m', 'pip', '--python', python, 'install', '--no-deps', '-q',
          '--disable-pip-version-check', '--force-reinstall', wheels[0]], cwd=str(root),
         env=env)
    empty = root / 'user'
    empty.mkdir()
    return python, str(env_dir / 'bin'), env, empty


def test_wheel_holds_configs_and_console_scripts(installed):
    python, bin_dir, env, empty = installed
    out = _run([python, '-c', 'import json, mmyolo_vis_hooks, mmyolo_vis_hooks.configs as c; '
                'print(json.dumps([mmyolo_vis_hooks.__file__, c.__path__[0]]))'],
               cwd=str(empty), env=env).stdout
    package, configs = json.loads(out.strip().splitlines()[-1])
    assert not package.startswith(REPO_ROOT) and 'site-packages' in package
    for name in ('_base_/featmap_vis.py', '_base_/boxam_vis.py', 'demo/yolov5_n_shapes.py'):
        assert osp.isfile(osp.join(configs, name)), name
    for script in ('mmyolo-featmap', 'mmyolo-boxam', 'mmyolo-boxam-eval', 'mmyolo-sliced'):
        assert osp.isfile(osp.join(bin_dir, script)), script
    # python -m works too, and the tools say their console-script name on errors
    result = subprocess.run([python, '-m', 'mmyolo_vis_hooks.cli.boxam_vis', 'x.png', 'c.py',
                             '--score-thr', '2'], cwd=str(empty), env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and 'error: --score-thr must be' in result.stderr


def test_user_config_trains_with_the_installed_hooks(installed):
    python, _, env, empty = installed
    data = empty / 'data'
    _run([python, '-c', 'import sys; from mmyolo_vis_hooks.data.synthetic_shapes import '
          'SplitSpec, generate_split; [generate_split(sys.argv[1], s, SplitSpec(n), seed=0) '
          'for s, n in (("train", 8), ("val", 4))]', str(data)], cwd=str(empty), env=env)
    (empty / 'my_config.py').write_text(USER_CONFIG)
    (empty / 'train.py').write_text(TRAIN_SCRIPT)
    out = _run([python, 'train.py', str(data) + '/', str(empty / 'work')], cwd=str(empty),
               env=env).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary['iters'] == 1 and not summary['package'].startswith(REPO_ROOT)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = glob.glob(str(empty / 'work' / '**' / 'events.out.tfevents.*'), recursive=True)
    assert events
    tags = set()
    for path in events:
        acc = EventAccumulator(path, size_guidance={'images': 0})
        acc.Reload()
        tags |= set(acc.Tags()['images'])
    assert any(t.startswith('featmap/') for t in tags), tags
    assert any(t.startswith('boxam/') for t in tags), tags


def test_console_scripts_run_on_generated_data(installed):
    python, bin_dir, env, empty = installed
    out = _run([python, '-c', 'import mmyolo_vis_hooks.configs as c; print(c.__path__[0])'],
               cwd=str(empty), env=env).stdout
    demo_config = osp.join(out.strip().splitlines()[-1], 'demo', 'yolov5_n_shapes.py')
    images = empty / 'images'
    _run([python, '-c', 'import sys; from mmyolo_vis_hooks.data.synthetic_shapes import '
          'SplitSpec, generate_split; generate_split(sys.argv[1], "val", SplitSpec(2), seed=0)',
          str(images)], cwd=str(empty), env=env)
    val = str(images / 'val')
    runs = {
        'mmyolo-featmap': [val, demo_config, DEMO_CHECKPOINT, '--out-dir', 'featmaps'],
        'mmyolo-boxam': [val, demo_config, DEMO_CHECKPOINT, '--out-dir', 'boxam',
                         '--method', 'eigencam'],
        'mmyolo-sliced': [val, demo_config, DEMO_CHECKPOINT, '--out-dir', 'sliced',
                          '--no-progress'],
    }
    for script, args in runs.items():
        _run([osp.join(bin_dir, script), *args], cwd=str(empty), env=env)
    assert len(glob.glob(str(empty / 'featmaps' / '*.png'))) == 2
    assert len(glob.glob(str(empty / 'boxam' / '*.png'))) >= 1
    assert osp.isfile(empty / 'sliced' / 'detections.json')


def test_one_opencv_distribution():
    """The stack has one OpenCV distribution (they all write ``cv2/``), and what requires an
    OpenCV asks for that one: albumentations/albucore are built from source after it
    (requirements/albumentations.txt, scripts/setup_env.sh), grad-cam is 1.5.5."""
    from importlib import metadata
    from packaging.requirements import Requirement

    opencv = {'opencv-python', 'opencv-python-headless', 'opencv-contrib-python',
              'opencv-contrib-python-headless'}
    installed = {d.metadata['Name'].lower() for d in metadata.distributions()} & opencv
    assert len(installed) == 1, f'OpenCV distributions installed: {sorted(installed)}'
    for dist in ('mmcv', 'mmengine', 'albumentations', 'albucore', 'grad-cam', 'sahi'):
        wanted = {Requirement(r).name.lower() for r in metadata.requires(dist) or []
                  if 'extra ==' not in r} & opencv
        assert wanted <= installed, (dist, wanted, installed)

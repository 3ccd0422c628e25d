"""MMYOLO is optional: with ``mmyolo`` made unimportable, the package imports, its hooks and
VisBackends are found by bare name with ``default_scope='mmdet'``, the feature-map tool runs on
an MMDetection RetinaNet, a real Runner trains an MMDetection config with FeatMapVisHook, and
an MMYOLO config is refused in one line saying how to install MMYOLO. Each check runs in a fresh
process whose import system refuses ``mmyolo`` (as an environment without it would)."""
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

from helpers import DEMO_CONFIG, REPO_ROOT

pytestmark = pytest.mark.slow

# Put in front of the script: every ``import mmyolo[.x]`` fails as if it were not installed.
BLOCK_MMYOLO = textwrap.dedent('''\
    import sys

    class _NoMMYOLO:
        def find_spec(self, name, path=None, target=None):
            if name == 'mmyolo' or name.startswith('mmyolo.'):
                raise ModuleNotFoundError(f'No module named {name!r}', name=name)
            return None

    sys.meta_path.insert(0, _NoMMYOLO())
    ''')

# An MMDetection RetinaNet-R18 on the generated shapes, shrunk for a 2-core CPU: 32 channels
# in the neck and head, 160-px inputs, 8 training and 4 validation images, one epoch.
MMDET_CONFIG = '''\
_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'
custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
data_root = {data_root!r}
metainfo = dict(classes=('circle', 'square', 'triangle'))
img_scale = (160, 160)
model = dict(
    backbone=dict(init_cfg=None),  # no torchvision download
    neck=dict(out_channels=32),
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=32, stacked_convs=1))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/train.json',
                 data_prefix=dict(img='train/'), filter_cfg=dict(filter_empty_gt=False),
                 pipeline=train_pipeline, indices=8))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline, indices=4))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=0.001))
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
custom_hooks = [dict(type='FeatMapVisHook', interval=1, num_images=2, target_layers=['neck'],
                     max_size=128)]
visualizer = dict(vis_backends=[dict(type='LocalVisBackend'),
                                dict(type='ActivationStatsVisBackend')])
'''


def _run_without_mmyolo(script: str, cwd: str):
    env = {**os.environ, 'PYTHONPATH': REPO_ROOT}  # this checkout's package, not an install
    return subprocess.run([sys.executable, '-c', BLOCK_MMYOLO + textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


@pytest.fixture
def mmdet_config(tmp_path, shapes_data):
    path = tmp_path / 'retinanet_shapes.py'
    path.write_text(MMDET_CONFIG.format(data_root=shapes_data))
    return str(path)


def test_package_and_registries_without_mmyolo(tmp_path):
    result = _run_without_mmyolo('''
        import mmyolo_vis_hooks
        from mmengine.registry import DefaultScope, HOOKS, VISBACKENDS
        from mmyolo_vis_hooks.requirements import check_mmyolo
        assert check_mmyolo() is False
        with DefaultScope.overwrite_default_scope('mmdet'):
            print(type(HOOKS.build(dict(type='FeatMapVisHook'))).__name__)
            print(type(HOOKS.build(dict(type='BoxAMVisHook'))).__name__)
            print(type(VISBACKENDS.build(dict(type='ActivationStatsVisBackend',
                                              save_dir='vis'))).__name__)
        print('mmyolo imported:', 'mmyolo' in sys.modules)
        ''', str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split('\n')[:4] == ['FeatMapVisHook', 'BoxAMVisHook',
                                             'ActivationStatsVisBackend', 'mmyolo imported: False']


def test_featmap_tool_on_mmdet_config_and_mmyolo_config_refused(tmp_path, shapes_data,
                                                                mmdet_config):
    image = osp.join(shapes_data, 'val', 'val_00000.png')
    out = tmp_path / 'retina.png'
    result = _run_without_mmyolo(f'''
        from mmyolo_vis_hooks.cli import featmap_vis
        featmap_vis.main([{image!r}, {mmdet_config!r}, '--target-layers', 'backbone', 'neck',
                          '--out-file', {str(out)!r}, '--device', 'cpu'], prog='mmyolo-featmap')
        print('mmyolo imported:', 'mmyolo' in sys.modules)
        featmap_vis.main([{image!r}, {DEMO_CONFIG!r}, '--device', 'cpu'],
                         prog='mmyolo-featmap')
        ''', str(tmp_path))
    assert 'mmyolo imported: False' in result.stdout, result.stderr[-3000:]
    assert out.is_file()
    # then the MMYOLO config: one line, what to install
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert lines[-1].startswith('mmyolo-featmap: error: yolov5_n_shapes.py'), lines[-1]
    assert 'needs MMYOLO: install one of: `pip install mmyolo==0.6.0`' in lines[-1]


def test_runner_trains_mmdet_config_with_featmap_hook(tmp_path, mmdet_config):
    work_dir = tmp_path / 'work'
    result = _run_without_mmyolo(f'''
        from mmengine.config import Config
        from mmengine.runner import Runner
        cfg = Config.fromfile({mmdet_config!r})
        assert cfg.default_scope == 'mmdet'
        cfg.work_dir = {str(work_dir)!r}
        runner = Runner.from_cfg(cfg)
        runner.train()
        print('hooks:', [type(h).__name__ for h in runner.hooks])
        print('epochs:', runner.epoch, 'mmyolo imported:', 'mmyolo' in sys.modules)
        ''', str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    assert 'epochs: 1 mmyolo imported: False' in result.stdout
    assert 'FeatMapVisHook' in result.stdout
    pngs = sorted(osp.relpath(str(p), str(work_dir)) for p in work_dir.rglob('featmap/**/*.png'))
    # two validation images, the neck's 5 pyramid levels each, logged at epoch 1
    assert len(pngs) == 10, pngs
    assert all(p.endswith('_1.png') for p in pngs), pngs

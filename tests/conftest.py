"""Shared fixtures. Every test runs in its own tmp dir so nothing lands in the work tree, and the
MMEngine singletons (Visualizer, DefaultScope, MessageHub, MMLogger) are cleared between tests.
"""
import os
import os.path as osp

import pytest
import mmyolo
import torch

from mmyolo_vis_hooks.testing import clear_mmengine_singletons

PACKAGED_CONFIGS = osp.join(osp.dirname(mmyolo.__file__), '.mim', 'configs')
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo', 'yolov5_n_shapes_320.py')

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def packaged_config(relpath: str) -> str:
    """Path of a config shipped inside the mmyolo package, e.g. 'yolov8/yolov8_n_...py'."""
    return osp.join(PACKAGED_CONFIGS, relpath)


_clear_singletons = clear_mmengine_singletons


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _clear_singletons()
    yield
    _clear_singletons()


@pytest.fixture(scope='session')
def shapes_data(tmp_path_factory):
    """A small generated shapes dataset: ``data_root`` with train (16) and val (8) splits."""
    from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_split
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_split(root, 'train', SplitSpec(16), seed=0)
    generate_split(root, 'val', SplitSpec(8), seed=0)
    return root + '/'


DEMO_CHECKPOINT = osp.join(REPO_ROOT, 'tests', 'assets', 'yolov5_n_shapes.pth')


@pytest.fixture(scope='session')
def demo_config():
    """Path of the embedded demo config (YOLOv5-n, 3 shape classes, 320 px)."""
    return DEMO_CONFIG


@pytest.fixture(scope='session')
def demo_checkpoint():
    """Path of the trained demo detector (weights only, fp16; see tests/assets/README.md).

    Load it with ``mmyolo_vis_hooks.engine.inference.build_detector(demo_config, path)``.
    """
    if not osp.isfile(DEMO_CHECKPOINT):
        raise FileNotFoundError(f'{DEMO_CHECKPOINT} is missing; tests/assets/README.md says '
                                'how to produce it')
    return DEMO_CHECKPOINT


@pytest.fixture
def reset_singletons():
    """A callable that clears the MMEngine singletons, for tests that build several Runners
    (a second Runner would otherwise reuse the first one's Visualizer and its log dir)."""
    return _clear_singletons

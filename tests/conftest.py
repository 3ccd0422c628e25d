"""Shared fixtures. Every test runs in its own tmp dir so nothing lands in the work tree, and the
MMEngine singletons (Visualizer, DefaultScope, MessageHub, MMLogger) are cleared between tests.
"""
import logging
import os
import os.path as osp

import pytest
import torch

import mmyolo

PACKAGED_CONFIGS = osp.join(osp.dirname(mmyolo.__file__), '.mim', 'configs')
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo', 'yolov5_n_shapes_320.py')

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def packaged_config(relpath: str) -> str:
    """Path of a config shipped inside the mmyolo package, e.g. 'yolov8/yolov8_n_...py'."""
    return osp.join(PACKAGED_CONFIGS, relpath)


def _clear_singletons() -> None:
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer
    for cls in (Visualizer, DefaultScope, MessageHub, MMLogger):
        cls._instance_dict.clear()
    logging.shutdown()


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

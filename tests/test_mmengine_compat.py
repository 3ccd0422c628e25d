"""The private MMEngine attributes the hooks read (``mmyolo_vis_hooks.mmengine_compat``) still
exist and mean what the hooks assume. If an MMEngine release renames them, this fails first."""
import copy
import os

import numpy as np
import pytest
from mmengine.runner import BaseLoop, Runner
from mmengine.visualization import LocalVisBackend, TensorboardVisBackend, Visualizer

from mmyolo_vis_hooks import mmengine_compat
from helpers.runner import tiny_train_cfg

pytestmark = pytest.mark.slow


def test_runner_loops_before_and_after_they_are_built(tmp_path, shapes_data):
    cfg = tiny_train_cfg(shapes_data, str(tmp_path / 'work'), epochs=1)
    runner = Runner.from_cfg(cfg)
    # Not built yet: the config dicts the Runner keeps until train() starts.
    assert isinstance(mmengine_compat.built_val_loop(runner), dict)
    assert isinstance(mmengine_compat.built_train_loop(runner), dict)
    runner.train_loop  # noqa: B018 - the public property builds the loop
    runner.val_loop  # noqa: B018
    assert isinstance(mmengine_compat.built_val_loop(runner), BaseLoop)
    assert isinstance(mmengine_compat.built_train_loop(runner), BaseLoop)
    assert mmengine_compat.built_val_loop(runner) is runner.val_loop

    no_val = copy.deepcopy(cfg)
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator'):
        no_val[key] = None
    no_val.experiment_name = 'no_val'
    runner = Runner.from_cfg(no_val)
    assert mmengine_compat.built_val_loop(runner) is None


def test_visualizer_backends_and_local_image_dir(tmp_path):
    visualizer = Visualizer(
        name='compat', save_dir=str(tmp_path),
        vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
    backends = mmengine_compat.vis_backends(visualizer)
    assert [type(b) for b in backends.values()] == [LocalVisBackend, TensorboardVisBackend]
    backends.clear()  # a copy: the Visualizer keeps its own
    assert len(mmengine_compat.vis_backends(visualizer)) == 2

    local, tensorboard = mmengine_compat.vis_backends(visualizer).values()
    # Visualizer(save_dir=D) hands its backends D/vis_data
    assert mmengine_compat.backend_save_dir(tensorboard) == str(tmp_path / 'vis_data')
    img_dir = mmengine_compat.local_image_dir(local)
    assert img_dir is not None and img_dir.startswith(str(tmp_path))
    assert mmengine_compat.local_image_dir(tensorboard) is None
    # What the hooks rely on: LocalVisBackend writes <img_dir>/<tag>_<step>.png.
    os.makedirs(os.path.join(img_dir, 'a'), exist_ok=True)
    local.add_image('a/b', np.zeros((4, 4, 3), np.uint8), step=3)
    assert os.path.isfile(os.path.join(img_dir, 'a', 'b_3.png'))

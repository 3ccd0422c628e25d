"""Small real Runner configs on the generated shapes data, their TensorBoard events read back,
training states compared bit for bit."""
import copy
import glob
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from . import DEMO_CONFIG


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


def half_dtype(device: str) -> torch.dtype:
    """The autocast dtype of mixed precision on ``device``: float16 on CUDA (what ``--amp``
    gives), bfloat16 on the CPU (the only dtype CPU autocast takes)."""
    return torch.float16 if torch.device(device).type == 'cuda' else torch.bfloat16


def use_mixed_precision(cfg: Config, device: str, monkeypatch) -> None:
    """Makes ``cfg`` train with MMEngine's ``AmpOptimWrapper`` (dynamic loss scale, as
    ``--amp`` sets it) in :func:`half_dtype` and validate with ``ValLoop(fp16=True)``, on
    ``device`` (MMEngine otherwise moves the model to CUDA wherever there is one).

    On the CPU, MMEngine, mmcv and MMDetection stop short, so the test stands in for them:
    ``AmpOptimWrapper`` asserts a CUDA/NPU/MLU/MUSA device at construction and builds a
    ``torch.cuda.amp.GradScaler`` (disabled without CUDA): the assertion is answered and a real
    ``torch.amp.GradScaler('cpu')`` replaces it. mmcv's CPU NMS takes float32 only, and
    MMDetection's ``CocoMetric`` turns boxes into numpy, which has no bfloat16: boxes and
    scores go to float32 before NMS and after ``val_step``. Nothing of the hooks is replaced.
    """
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.optim_wrapper.dtype = str(half_dtype(device)).split('.')[-1]
    cfg.val_cfg = dict(type='ValLoop', fp16=True)
    if torch.device(device).type == 'cuda':
        return
    import functools

    import mmdet.models.dense_heads.base_dense_head as dense_head
    from mmengine.model import BaseModel
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr('mmengine.runner.runner.get_device', lambda: 'cpu')
    monkeypatch.setattr('mmengine.runner.amp.get_device', lambda: 'cpu')
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))
    nms = dense_head.batched_nms
    monkeypatch.setattr(dense_head, 'batched_nms',
                        lambda boxes, scores, *args, **kwargs:
                        nms(boxes.float(), scores.float(), *args, **kwargs))
    val_step = BaseModel.val_step

    def float_val_step(self, data):
        outputs = val_step(self, data)
        for output in outputs:
            pred = output.pred_instances
            pred.bboxes, pred.scores = pred.bboxes.float(), pred.scores.float()
        return outputs
    monkeypatch.setattr(BaseModel, 'val_step', float_val_step)


def autocast_state(device: str) -> tuple:
    """What an autocast region consists of on ``device`` and the CPU: enabled flags, dtypes
    and the cache flag (a hook must leave it as it found it)."""
    types_ = sorted({'cpu', torch.device(device).type})
    return tuple((t, torch.is_autocast_enabled(t), torch.get_autocast_dtype(t))
                 for t in types_) + (torch.is_autocast_cache_enabled(), )


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


"""Training wall time with FeatMapVisHook (interval=1, 4 images, backbone + neck) vs without,
on the demo config, measured side by side in one run (runs interleaved: off, on, off, on ...).

    .venv/bin/python benchmarks/bench_featmap_hook.py --epochs 3 --repeats 2

Also prints the time spent inside the hook's own methods, which is less sensitive to noise
from other processes than the difference of two wall times.
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time
from functools import wraps

from mmengine.config import Config
from mmengine.runner import Runner

import mmyolo_vis_hooks  # noqa: F401  (registers the hook)
from mmyolo_vis_hooks.data.synthetic_shapes import generate_demo_data
from mmyolo_vis_hooks.hooks import FeatMapVisHook
from mmyolo_vis_hooks.testing import clear_mmengine_singletons

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes_320.py')
HOOK_METHODS = ('before_val_epoch', 'before_val_iter', 'after_val_iter', 'after_val_epoch')


def build_cfg(data_root, work_dir, epochs, with_hook):
    cfg = Config.fromfile(CONFIG)
    cfg.work_dir = work_dir
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.param_scheduler.max_epochs = epochs
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**6)
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h['type'] not in ('FeatMapVisHook', 'BoxAMVisHook')]
    if with_hook:
        cfg.custom_hooks.append(dict(type='FeatMapVisHook', interval=1, num_images=4,
                                     target_layers=['backbone', 'neck'],
                                     channel_reduction='squeeze_mean'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = data_root
    cfg.val_evaluator.ann_file = osp.join(data_root, 'annotations/val.json')
    cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
    cfg.log_level = 'WARNING'
    return cfg


def timed_hook_methods(hook, totals):
    for name in HOOK_METHODS:
        method = getattr(hook, name)

        @wraps(method)
        def timed(*args, _method=method, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                totals.append(time.perf_counter() - start)
        setattr(hook, name, timed)


def run_once(data_root, epochs, with_hook):
    clear_mmengine_singletons()
    with tempfile.TemporaryDirectory() as work_dir:
        runner = Runner.from_cfg(build_cfg(data_root, work_dir, epochs, with_hook))
        in_hook = []
        for hook in runner.hooks:
            if isinstance(hook, FeatMapVisHook):
                timed_hook_methods(hook, in_hook)
        start = time.perf_counter()
        runner.train()
        return time.perf_counter() - start, sum(in_hook)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--data-dir', default=osp.join(REPO, 'data'))
    args = parser.parse_args()
    data_root = osp.join(args.data_dir, 'shapes')
    if not osp.isfile(osp.join(data_root, 'annotations', 'val.json')):
        generate_demo_data(args.data_dir, large=False)
    run_once(data_root, 1, False)  # warm-up: imports, file cache
    off, on, inside = [], [], []
    for _ in range(args.repeats):
        off.append(run_once(data_root, args.epochs, False)[0])
        wall, hook_time = run_once(data_root, args.epochs, True)
        on.append(wall)
        inside.append(hook_time)
    print(f'training {args.epochs} epochs (val every epoch), {args.repeats} interleaved runs each')
    print(f'  without hook: {", ".join(f"{t:.1f}" for t in off)} s  median '
          f'{statistics.median(off):.1f} s')
    print(f'  with hook   : {", ".join(f"{t:.1f}" for t in on)} s  median '
          f'{statistics.median(on):.1f} s')
    print(f'  wall-time ratio with/without (medians): '
          f'{statistics.median(on) / statistics.median(off):.3f}  (target <= 1.05)')
    print(f'  time inside the hook: median {statistics.median(inside):.2f} s per run = '
          f'{statistics.median(inside) / statistics.median(off):.3%} of training without it')


if __name__ == '__main__':
    main()

"""Training wall time with FeatMapVisHook (interval=1, 4 images, backbone + neck) vs without,
on the demo config, measured side by side in one run (runs interleaved: off, on, off, on ...).

    .venv/bin/python benchmarks/bench_featmap_hook.py --epochs 3 --repeats 2
    .venv/bin/python benchmarks/bench_featmap_hook.py --small   # a quick check (the tests)

``--hook boxam`` measures the demo's BoxAMVisHook instead (the ``configs/_base_/boxam_vis.py``
snippet: GradCAM, interval 1, 4 images, top 3 boxes), for information (no target);
``--hook boxam_faithfulness`` the same entry with ``log_faithfulness=True`` (deletion and
insertion AUC scalars, 8 steps).

Also prints the time spent inside the hook's own methods, which is less sensitive to noise
from other processes than the difference of two wall times, and the images the hook logged:
the run exits with 1 when the hook was never called, or the feature-map hook logged nothing.
Measured figures: docs/benchmarks.md.
"""
import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time
from functools import wraps

import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmyolo_vis_hooks  # noqa: F401  (registers the hook)
from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_demo_data, generate_split
from mmyolo_vis_hooks.hooks import BoxAMVisHook, FeatMapVisHook
from mmyolo_vis_hooks.testing import clear_mmengine_singletons

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py')
HOOK_METHODS = ('before_val_epoch', 'before_val_iter', 'after_val_iter', 'after_val_epoch')


HOOKS = dict(
    featmap=dict(type='FeatMapVisHook', interval=1, num_images=4,
                 target_layers=['backbone', 'neck'], channel_reduction='squeeze_mean'),
    boxam=None,  # the demo config's own entry
    boxam_faithfulness=None)  # the same, with the changes in DEMO_BOXAM_CHANGES
DEMO_BOXAM_CHANGES = dict(boxam={}, boxam_faithfulness=dict(log_faithfulness=True))


def build_cfg(data_root, work_dir, epochs, with_hook, hook='featmap', load_from=None):
    cfg = Config.fromfile(CONFIG)
    cfg.work_dir = work_dir
    cfg.load_from = load_from
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.param_scheduler.max_epochs = epochs
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**6)
    demo_boxam = next(h for h in cfg.custom_hooks if h['type'] == 'BoxAMVisHook')
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h['type'] not in ('FeatMapVisHook', 'BoxAMVisHook')]
    if with_hook:
        cfg.custom_hooks.append(HOOKS[hook] or dict(demo_boxam, interval=1,
                                                    **DEMO_BOXAM_CHANGES[hook]))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = data_root
    cfg.val_evaluator.ann_file = osp.join(data_root, 'annotations/val.json')
    cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
    cfg.log_level = 'WARNING'
    return cfg


def timed_hook_methods(hook, totals, images):
    def counted(*args, _log_image=hook.log_image, **kwargs):
        images.append(1)
        return _log_image(*args, **kwargs)
    hook.log_image = counted
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


def run_once(data_root, epochs, with_hook, hook_name='featmap', load_from=None):
    clear_mmengine_singletons()
    with tempfile.TemporaryDirectory() as work_dir:
        runner = Runner.from_cfg(build_cfg(data_root, work_dir, epochs, with_hook, hook_name,
                                           load_from))
        in_hook, images = [], []
        for hook in runner.hooks:
            if isinstance(hook, (FeatMapVisHook, BoxAMVisHook)):
                timed_hook_methods(hook, in_hook, images)
        start = time.perf_counter()
        runner.train()
        return time.perf_counter() - start, sum(in_hook), len(in_hook), len(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--data-dir', default=osp.join(REPO, 'data'))
    parser.add_argument('--hook', choices=sorted(HOOKS), default='featmap')
    parser.add_argument('--load-from', default=None,
                        help='start from these weights (e.g. tests/assets/yolov5_n_shapes.pth: '
                        'from random weights a 1-epoch run has no box above 0.3 to explain)')
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs: 8 + 4 generated images, 1 epoch, 1 run '
                        'each, no warm-up run, 1 torch thread')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as small_root:
        if args.small:
            args.epochs, args.repeats = 1, 1
            torch.set_num_threads(1)
            data_root = small_root
            generate_split(data_root, 'train', SplitSpec(8), seed=0)
            generate_split(data_root, 'val', SplitSpec(4), seed=0)
        else:
            data_root = osp.join(args.data_dir, 'shapes')
            if not osp.isfile(osp.join(data_root, 'annotations', 'val.json')):
                generate_demo_data(args.data_dir, large=False)
            run_once(data_root, 1, False)  # warm-up: imports, file cache
        measure(args, data_root)


def measure(args, data_root: str) -> None:
    off, on, inside, calls, images = [], [], [], 0, 0
    for _ in range(args.repeats):
        off.append(run_once(data_root, args.epochs, False, load_from=args.load_from)[0])
        wall, hook_time, hook_calls, hook_images = run_once(data_root, args.epochs, True,
                                                            args.hook, args.load_from)
        on.append(wall)
        inside.append(hook_time)
        calls, images = calls + hook_calls, images + hook_images
    described = HOOKS[args.hook] or ("the demo config's BoxAMVisHook at interval 1 "
                                     f'{DEMO_BOXAM_CHANGES[args.hook] or ""}')
    print(f'{args.hook} hook: {described}')
    print(f'training {args.epochs} epochs (val every epoch), {args.repeats} interleaved runs each')
    print(f'  without hook: {", ".join(f"{t:.1f}" for t in off)} s  median '
          f'{statistics.median(off):.1f} s')
    print(f'  with hook   : {", ".join(f"{t:.1f}" for t in on)} s  median '
          f'{statistics.median(on):.1f} s')
    print(f'  wall-time ratio with/without (medians): '
          f'{statistics.median(on) / statistics.median(off):.3f}'
          + ('  (target <= 1.05)' if args.hook == 'featmap' else ''))
    print(f'  time inside the hook: median {statistics.median(inside):.2f} s per run = '
          f'{statistics.median(inside) / statistics.median(off):.3%} of training without it')
    print(f'  hook methods called {calls} times, {images} images logged over the runs')
    if not calls or (args.hook == 'featmap' and not images):
        print(f'FAILED: the hook was called {calls} times and logged {images} images',
              file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

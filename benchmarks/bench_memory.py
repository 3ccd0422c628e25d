"""Process memory over repeated visualizations: RSS growth over N validation runs with the
visualization hooks vs the same validation runs without them, side by side. Each variant runs in
a fresh process, so neither inherits the other's (or a test session's) allocator pools.

    .venv/bin/python benchmarks/bench_memory.py --runs 30
    .venv/bin/python benchmarks/bench_memory.py --small   # a quick check (the tests)

Each variant builds the demo config's Runner (with its EMAHook) on the generated shapes data,
runs ``runner.val()`` ``--warmup`` times, then ``--runs`` times, and reports the resident set
size (``/proc/self/statm``) after the warm-up and after the runs, and the forward/backward hooks
left on the model. The hooks: FeatMapVisHook (maps of backbone + neck captured during the
validation forward, letterbox-aligned) and BoxAMVisHook (gradcam, gradients on its own forward).
Claimed, and checked (the run exits with 1 otherwise): no module's hook counts change in either
variant, and the hooks logged images in every run. The growth is printed, not checked here
(``tests/test_training_safety.py`` checks the 50 MB bound on 30 runs).

``--variant hooks --json`` measures one variant in this process and prints JSON (used by
``tests/test_training_safety.py``).
"""
import argparse
import gc
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py')


def vis_hooks(num_images: int, cam_images: int) -> list:
    return [
        dict(type='FeatMapVisHook', interval=1, num_images=num_images,
             target_layers=['backbone', 'neck']),
        dict(type='BoxAMVisHook', interval=1, num_images=cam_images, method='gradcam', topk=2,
             score_thr=0.0),  # a barely trained model: explain its best boxes whatever the score
    ]


def rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def hook_counts(model) -> dict:
    """Per module: numbers of forward, forward-pre, backward and backward-pre hooks."""
    return {name: [len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(m._backward_pre_hooks)] for name, m in model.named_modules()}


def measure(data_root: str, runs: int, warmup: int, with_hooks: bool, val_images: int,
            num_images: int, cam_images: int) -> dict:
    """One variant, in this process."""
    import mmengine.config.config as config_module
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmyolo_vis_hooks.hooks import BaseVisHook
    cfg = Config.fromfile(CONFIG)
    with tempfile.TemporaryDirectory() as work_dir:
        cfg.work_dir = work_dir
        cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] == 'EMAHook']
        cfg.custom_hooks += vis_hooks(num_images, cam_images) if with_hooks else []
        cfg.val_dataloader.batch_size = min(4, val_images)
        cfg.val_dataloader.num_workers = 0
        cfg.val_dataloader.dataset.batch_shapes_cfg.batch_size = min(4, val_images)
        cfg.val_dataloader.dataset.data_root = data_root
        cfg.val_dataloader.dataset.indices = val_images
        cfg.train_dataloader.dataset.data_root = data_root
        cfg.val_evaluator.ann_file = osp.join(data_root, 'annotations', 'val.json')
        cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
        cfg.log_level = 'WARNING'
        # save_best needs before_train; runner.val() alone would fail in its after_val_epoch.
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
        # Every runner.val() pretty-prints the config with yapf (seconds on a loaded 2-core
        # machine, and the same in both variants): log the unformatted text instead.
        config_module.FormatCode = lambda text, **kwargs: (text, False)
        runner = Runner.from_cfg(cfg)
        images = []
        for hook in runner.hooks:
            if isinstance(hook, BaseVisHook):
                def counted(*args, _log_image=hook.log_image, **kwargs):
                    images.append(1)
                    return _log_image(*args, **kwargs)
                hook.log_image = counted
        counts_before = hook_counts(runner.model)
        for _ in range(warmup):
            runner.val()
        gc.collect()
        start, images_at_start = rss_mb(), len(images)
        for _ in range(runs):
            runner.val()
        gc.collect()
        end = rss_mb()
        counts_after = hook_counts(runner.model)
        return dict(start=start, end=end, growth=end - start,
                    images_per_run=(len(images) - images_at_start) / runs,
                    changed_hooks={name: [counts_before.get(name), count]
                                   for name, count in counts_after.items()
                                   if counts_before.get(name) != count})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=30, help='measured validation runs')
    parser.add_argument('--warmup', type=int, default=3, help='validation runs before measuring')
    parser.add_argument('--val-images', type=int, default=8, help='validation set size')
    parser.add_argument('--num-images', type=int, default=4,
                        help='images FeatMapVisHook draws')
    parser.add_argument('--cam-images', type=int, default=2, help='images BoxAMVisHook draws')
    parser.add_argument('--data-root', default=osp.join(REPO, 'data', 'shapes'),
                        help='generated shapes data (annotations/, train/, val/)')
    parser.add_argument('--variant', choices=('plain', 'hooks'),
                        help='measure only this variant, in this process')
    parser.add_argument('--json', action='store_true', help='with --variant: print JSON')
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs: 1 run after 1 warm-up, 2 generated '
                        'validation images')
    args = parser.parse_args()
    if args.small:
        import tempfile
        from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_split
        args.runs, args.warmup, args.val_images, args.num_images, args.cam_images = 1, 1, 2, 2, 1
        args.data_root = tempfile.mkdtemp(prefix='bench_memory_')
        generate_split(args.data_root, 'train', SplitSpec(2), seed=0)
        generate_split(args.data_root, 'val', SplitSpec(2), seed=0)
    if not osp.isfile(osp.join(args.data_root, 'annotations', 'val.json')):
        from mmyolo_vis_hooks.data.synthetic_shapes import generate_demo_data
        generate_demo_data(osp.dirname(osp.abspath(args.data_root)), large=False)
    sizes = ['--runs', str(args.runs), '--warmup', str(args.warmup), '--val-images',
             str(args.val_images), '--num-images', str(args.num_images), '--cam-images',
             str(args.cam_images)]
    if args.variant:
        result = measure(args.data_root, args.runs, args.warmup, args.variant == 'hooks',
                         args.val_images, args.num_images, args.cam_images)
        print(json.dumps(result) if args.json else result)
        return
    results = {}
    for variant in ('plain', 'hooks'):
        out = subprocess.run([sys.executable, __file__, *sizes, '--data-root', args.data_root,
                              '--variant', variant, '--json'], capture_output=True, text=True,
                             check=True, cwd=REPO,
                             env=dict(os.environ, OMP_NUM_THREADS='1') if args.small else None)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f'RSS over {args.runs} validation runs after {args.warmup} warm-up runs '
          f'({args.val_images} validation images; feature maps of {args.num_images}, box '
          f'CAMs of {args.cam_images})')
    for variant, label in (('plain', 'without vis hooks'), ('hooks', 'FeatMap + BoxAM hooks')):
        r = results[variant]
        print(f'  {label:<22}: {r["start"]:7.1f} MB -> {r["end"]:7.1f} MB  growth '
              f'{r["growth"]:+6.1f} MB  images/run {r["images_per_run"]:.0f}  modules with '
              f'changed hook counts: {len(r["changed_hooks"])}')
    extra = results['hooks']['growth'] - results['plain']['growth']
    print(f'  growth due to the hooks: {extra:+.1f} MB over {args.runs} runs '
          f'({extra / args.runs * 1024:+.0f} KB per run; 50 MB in total is allowed)')
    if args.small:
        import shutil
        shutil.rmtree(args.data_root, ignore_errors=True)
    failures = [f'{variant}: hook counts changed on {len(r["changed_hooks"])} modules'
                for variant, r in results.items() if r['changed_hooks']]
    if not results['hooks']['images_per_run']:
        failures.append('the hooks logged no image')
    if failures:
        print('FAILED: ' + '; '.join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

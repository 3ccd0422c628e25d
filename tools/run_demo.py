"""The main job: generate the demo data (if missing), train the demo detector on the CPU with an
MMEngine Runner, evaluate it and print mAP, wall time, checkpoint and how to open TensorBoard.

Run from the repository root (``bash scripts/demo.sh`` does): paths default to ``data/`` and
``work_dirs/demo/``.
"""
import argparse
import os
import os.path as osp
import time
from typing import Dict, List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmyolo_vis_hooks.data.synthetic_shapes import generate_demo_data
from mmyolo_vis_hooks.engine.checkpoint import export_weights

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO_ROOT, 'configs', 'demo', 'yolov5_n_shapes_320.py')
DATA_FILES = ('shapes/annotations/train.json', 'shapes/annotations/val.json', 'large/large.json')
MAP50_KEY = 'coco/bbox_mAP_50'
MAP_KEY = 'coco/bbox_mAP'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', default=DEMO_CONFIG, help='config file. Defaults to the demo')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='checkpoints and logs. Defaults to work_dirs/demo')
    parser.add_argument('--data-dir', default='data',
                        help='demo data (generated here when missing). Defaults to data')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the data generator and of training. Defaults to 0')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs. Defaults to the config (max_epochs)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume training: from CKPT, or without a value from the latest '
                        'checkpoint in --work-dir')
    parser.add_argument('--export-weights', default=None, metavar='PTH',
                        help='also write the final (EMA) weights, fp16, without optimizer '
                        'state, to PTH (how tests/assets/yolov5_n_shapes.pth is made)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads of the training process. Defaults to 1: the '
                        'data workers use the other core, and on a busy 2-core machine two '
                        'OpenMP threads ran 8-11 s/iter against 0.62 s/iter with one')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='config overrides, key=value (e.g. train_cfg.val_interval=1)')
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f'--epochs must be a positive integer, got {args.epochs}')
    if args.threads < 1:
        parser.error(f'--threads must be a positive integer, got {args.threads}')
    return args


def ensure_demo_data(data_dir: str, seed: int) -> bool:
    """Generates the demo data into ``data_dir`` unless all its annotation files exist.

    Returns:
        bool: True when the data was generated now.
    """
    if all(osp.isfile(osp.join(data_dir, f)) for f in DATA_FILES):
        return False
    print(f'[demo] generating the synthetic shapes data into {data_dir}/ (seed {seed})')
    generate_demo_data(data_dir, seed=seed)
    return True


def _set_data_root(cfg: Config, data_dir: str) -> None:
    shapes_root = osp.join(data_dir, 'shapes') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader]['dataset']
        # dataset wrappers (e.g. RepeatDataset) keep the real dataset one level down
        dataset = dataset.get('dataset', dataset)
        dataset['data_root'] = shapes_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator]['ann_file'] = osp.join(shapes_root, 'annotations', 'val.json')


def _set_epochs(cfg: Config, epochs: int) -> None:
    cfg.train_cfg.max_epochs = epochs
    cfg.default_hooks.param_scheduler.max_epochs = epochs
    close_epochs = cfg.get('close_mosaic_epochs', 0)
    for hook in cfg.get('custom_hooks', []):
        if hook['type'].split('.')[-1] == 'PipelineSwitchHook':
            hook['switch_epoch'] = max(0, epochs - close_epochs)


def build_config(args: argparse.Namespace) -> Config:
    """The demo config with the command line applied (data, work dir, epochs, seed, resume)."""
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    _set_data_root(cfg, args.data_dir)
    if args.epochs is not None:
        _set_epochs(cfg, args.epochs)
    cfg.randomness = dict(seed=args.seed, deterministic=False)
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def _tensorboard_dir(runner: Runner) -> Optional[str]:
    """Log dir of the first TensorBoard backend (subclasses such as ActivationStatsVisBackend
    included; ``Visualizer.get_backend`` only looks names up)."""
    from mmengine.visualization import TensorboardVisBackend
    for backend in getattr(runner.visualizer, '_vis_backends', {}).values():
        if isinstance(backend, TensorboardVisBackend):
            return backend._save_dir
    return None


def _final_checkpoint(work_dir: str) -> Optional[str]:
    last = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last):
        return None
    with open(last, encoding='utf-8') as f:
        return f.read().strip() or None


def _last_val_metrics(runner: Runner) -> Dict[str, float]:
    """The metrics of the last validation (RuntimeInfoHook stores them as ``val/<key>``)."""
    metrics = {}
    for key in (MAP50_KEY, MAP_KEY):
        buffer = runner.message_hub.log_scalars.get(f'val/{key}')
        if buffer is not None:
            metrics[key] = float(buffer.current())
    return metrics


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    ensure_demo_data(args.data_dir, args.seed)
    cfg = build_config(args)
    torch.set_num_threads(args.threads)

    runner = Runner.from_cfg(cfg)
    start, cpu_start = time.perf_counter(), time.process_time()
    runner.train()
    train_seconds = time.perf_counter() - start
    # CPU time of this process (all its threads; data workers excluded): on a shared machine
    # the wall time grows with the other load, this much less.
    cpu_seconds = time.process_time() - cpu_start

    metrics = _last_val_metrics(runner)
    if MAP50_KEY not in metrics:  # e.g. val_interval pushed past the end by --cfg-options
        metrics = {k: float(v) for k, v in runner.val().items() if k in (MAP50_KEY, MAP_KEY)}
    checkpoint = _final_checkpoint(cfg.work_dir)
    tb_dir = _tensorboard_dir(runner)
    epochs = cfg.train_cfg.max_epochs

    exported = None
    if args.export_weights and checkpoint:
        exported = export_weights(checkpoint, args.export_weights,
                                  extra_meta=dict(epochs=epochs, seed=args.seed,
                                                  val_bbox_mAP_50=metrics.get(MAP50_KEY)))

    lines = [
        '',
        '=' * 72,
        f'demo detector: {osp.basename(args.config)}, {epochs} epochs, seed {args.seed}',
        f'val bbox mAP@50: {metrics.get(MAP50_KEY, float("nan")):.3f}   '
        f'mAP@[.5:.95]: {metrics.get(MAP_KEY, float("nan")):.3f}',
        f'training wall time: {train_seconds / 60:.1f} min ({train_seconds:.0f} s, '
        f'validations included, {os.cpu_count()} CPU cores; CPU time of the main process '
        f'{cpu_seconds / 60:.1f} min)',
        f'checkpoint: {checkpoint}',
    ]
    if exported:
        lines.append(f'weights-only export: {exported}')
    if tb_dir:
        lines += [
            f'TensorBoard logs: {tb_dir}',
            f'open them with:  tensorboard --logdir {tb_dir} --samples_per_plugin '
            f'images={max(epochs, 10)}',
        ]
    lines.append('=' * 72)
    print('\n'.join(lines), flush=True)
    return dict(metrics=metrics, train_seconds=train_seconds, cpu_seconds=cpu_seconds,
                checkpoint=checkpoint, tensorboard_dir=tb_dir, epochs=epochs)


if __name__ == '__main__':
    main()

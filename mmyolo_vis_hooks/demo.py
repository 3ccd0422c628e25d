"""The main job behind ``bash scripts/demo.sh`` (``tools/run_demo.py`` only parses and prints):
generate the demo data when missing, build the demo config with the command line applied,
choose the torch thread count, train with an MMEngine Runner on the CPU, read the val metrics,
export the weights and format the summary.
"""
import os
import os.path as osp
import time
from importlib import import_module
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from .data.synthetic_shapes import (generate_demo_data, generate_pose_demo_data,
                                    generate_rotated_demo_data)
from .engine.core.devices import usable_cpus

# The main job's config (configs/demo/, installed as mmyolo_vis_hooks.configs); the test detector
# (tests/assets) was trained with its base, yolov5_n_shapes.py (320 px, 30 epochs).
DEMO_CONFIG = osp.join(list(import_module('mmyolo_vis_hooks.configs').__path__)[0], 'demo',
                       'yolov5_n_shapes_main.py')
# What the main job uses; the sliced-evaluation set (large_eval/) comes with the first
# generation, or from tools/make_demo_data.py for a folder made before it existed.
DATA_FILES = ('shapes/annotations/train.json', 'shapes/annotations/val.json', 'large/large.json')
# The rotated-box demo (configs/demo/rtmdet_r_shapes.py); its val DOTA folder is written last.
ROTATED_DATA_FILES = ('shapes_rotated/annotations/train.json',
                      'shapes_rotated/annotations/val.json', 'shapes_rotated/annfiles/val')
# The pose demo (configs/demo/yolox_pose_shapes.py): stick figures, COCO keypoints.
POSE_DATA_FILES = ('stick_figures/annotations/train.json', 'stick_figures/annotations/val.json')
# A config names its demo dataset (a folder of --data-dir) with a top-level `demo_dataset`.
DEMO_DATASETS = ('shapes', 'shapes_rotated', 'stick_figures')
MAP50_KEY = 'coco/bbox_mAP_50'
MAP_KEY = 'coco/bbox_mAP'
# (mAP@50, mAP@[.5:.95]) keys per evaluator: COCO boxes, then mmrotate's DOTAMetric (rotated
# IoU; its `dota/mAP` is the mean over the config's thresholds, the demo's is 0.5 alone), then
# mmpose's keypoint CocoMetric (OKS AP)
POSE_AP_KEY = 'coco/AP'
METRIC_KEYS = ((MAP50_KEY, MAP_KEY), ('dota/AP50', None), ('coco/AP .5', POSE_AP_KEY))


def auto_threads(num_workers: int, cpus: Optional[int] = None) -> int:
    """Torch threads for the training process: the usable CPUs minus the train dataloader's
    workers, at least 1.

    The rule depends only on the machine (affinity mask) and the config, never on the current
    load, so a seed gives the same run on the same machine. On a 2-core machine with 2 workers it
    gives 1 thread: the workers take the other core (see docs/demo.md, for the
    measurements behind it).
    """
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, cpus - max(0, num_workers))


def demo_dataset(cfg: Config) -> str:
    """The demo dataset a config trains on: its top-level ``demo_dataset``, default
    ``'shapes'`` (one of :data:`DEMO_DATASETS`)."""
    name = cfg.get('demo_dataset', 'shapes')
    if name not in DEMO_DATASETS:
        raise ValueError(f'demo_dataset must be one of {DEMO_DATASETS}, got {name!r}')
    return name


def ensure_demo_data(data_dir: str, seed: int, dataset: str = 'shapes') -> bool:
    """Generates a demo dataset into ``data_dir`` unless all its annotation files exist.

    Args:
        dataset (str): ``'shapes'`` (the demo: ``shapes/``, ``large/``, ``large_eval/``) or
            ``'shapes_rotated'`` (``shapes_rotated/``, DOTA rotated boxes) or
            ``'stick_figures'`` (``stick_figures/``, COCO keypoints). Defaults to ``'shapes'``.

    Returns:
        bool: True when the data was generated now.
    """
    files = dict(shapes_rotated=ROTATED_DATA_FILES, stick_figures=POSE_DATA_FILES).get(
        dataset, DATA_FILES)
    if all(osp.exists(osp.join(data_dir, f)) for f in files):
        return False
    print(f'[demo] generating the synthetic {dataset} data into {data_dir}/ (seed {seed})',
          flush=True)
    if dataset == 'shapes_rotated':
        generate_rotated_demo_data(osp.join(data_dir, dataset), seed=seed)
    elif dataset == 'stick_figures':
        generate_pose_demo_data(osp.join(data_dir, dataset), seed=seed)
    else:
        generate_demo_data(data_dir, seed=seed)
    return True


def _set_data_root(cfg: Config, data_dir: str) -> None:
    shapes_root = osp.join(data_dir, demo_dataset(cfg)) + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader]['dataset']
        # dataset wrappers (e.g. RepeatDataset) keep the real dataset one level down
        dataset = dataset.get('dataset', dataset)
        dataset['data_root'] = shapes_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        if 'ann_file' in cfg[evaluator]:  # COCO (boxes or keypoints); DOTAMetric reads the
            # dataset's boxes
            cfg[evaluator]['ann_file'] = osp.join(shapes_root, 'annotations', 'val.json')


def _set_epochs(cfg: Config, epochs: int) -> None:
    cfg.train_cfg.max_epochs = epochs
    # YOLOv5ParamSchedulerHook's epochs; MMEngine's ParamSchedulerHook (YOLOX, RTMDet) has none
    if 'max_epochs' in cfg.default_hooks.param_scheduler:
        cfg.default_hooks.param_scheduler.max_epochs = epochs
    close_epochs = cfg.get('close_mosaic_epochs', 0)
    for hook in cfg.get('custom_hooks', []):
        if hook['type'].split('.')[-1] == 'PipelineSwitchHook':
            hook['switch_epoch'] = max(0, epochs - close_epochs)


def build_config(config: str = DEMO_CONFIG, work_dir: str = 'work_dirs/demo',
                 data_dir: str = 'data', seed: int = 0, epochs: Optional[int] = None,
                 resume: Optional[str] = None, cfg_options: Optional[dict] = None) -> Config:
    """The demo config with the command line applied.

    Args:
        resume (str, optional): ``'auto'`` (the latest checkpoint in ``work_dir``), a checkpoint
            path, or None (no resume).
        cfg_options (dict, optional): ``key=value`` overrides, merged last.
    """
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    _set_data_root(cfg, data_dir)
    if epochs is not None:
        _set_epochs(cfg, epochs)
    cfg.randomness = dict(seed=seed, deterministic=False)
    if resume is not None:
        cfg.resume = True
        cfg.load_from = None if resume == 'auto' else resume
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def tensorboard_dir(runner) -> Optional[str]:
    """Log dir of the runner's first TensorBoard backend (subclasses such as
    ActivationStatsVisBackend included; ``Visualizer.get_backend`` only looks names up)."""
    from mmengine.visualization import TensorboardVisBackend

    from .mmengine_compat import backend_save_dir, vis_backends
    for backend in vis_backends(runner.visualizer).values():
        if isinstance(backend, TensorboardVisBackend):
            return backend_save_dir(backend)
    return None


def final_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``work_dir/last_checkpoint`` names, if any."""
    last = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last):
        return None
    with open(last, encoding='utf-8') as f:
        return f.read().strip() or None


def last_val_metrics(runner) -> Dict[str, float]:
    """mAP@50 and mAP of the last validation (RuntimeInfoHook stores them as ``val/<key>``),
    under the evaluator's keys (:data:`METRIC_KEYS`)."""
    metrics = {}
    for key in (key for pair in METRIC_KEYS for key in pair if key):
        buffer = runner.message_hub.log_scalars.get(f'val/{key}')
        if buffer is not None:
            metrics[key] = float(buffer.current())
    return metrics


def map_values(metrics: Dict[str, float]) -> Tuple[Optional[float], Optional[float]]:
    """(mAP@50, mAP) of whichever evaluator's keys (:data:`METRIC_KEYS`) ``metrics`` has."""
    for map50_key, map_key in METRIC_KEYS:
        if map50_key in metrics:
            return metrics[map50_key], metrics.get(map_key) if map_key else None
    return None, None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or ``'unknown CPU'``."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown CPU'


def _loadavg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def train(cfg: Config, threads: Optional[int] = None,
          export_to: Optional[str] = None) -> Dict[str, object]:
    """Trains ``cfg`` with an MMEngine Runner and returns what the summary reports.

    Args:
        threads (int, optional): torch CPU threads of this process; None: :func:`auto_threads`
            of the train dataloader's ``num_workers``.
        export_to (str, optional): Also write the final (EMA) weights, fp16, weights only, here.

    Returns:
        dict: ``metrics`` (mAP@50 and mAP of the last validation), ``train_seconds`` (wall),
        ``cpu_seconds`` (CPU time of this process, all its threads; data workers excluded),
        ``threads``, ``cpus``, ``load_before``/``load_after`` (1-min load average),
        ``checkpoint``, ``exported``, ``tensorboard_dir``, ``epochs``, ``seed``, ``config``.
    """
    from mmengine.runner import Runner
    if threads is None:
        threads = auto_threads(cfg.train_dataloader.get('num_workers', 0))
    torch.set_num_threads(threads)

    runner = Runner.from_cfg(cfg)
    load_before = _loadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    runner.train()
    train_seconds = time.perf_counter() - start
    # On a shared machine the wall time grows with the other load, the CPU time much less.
    cpu_seconds = time.process_time() - cpu_start
    load_after = _loadavg()

    metrics = last_val_metrics(runner)
    if map_values(metrics)[0] is None:  # e.g. val_interval pushed past the end
        keys = {key for pair in METRIC_KEYS for key in pair if key}
        metrics = {k: float(v) for k, v in runner.val().items() if k in keys}
    checkpoint = final_checkpoint(cfg.work_dir)
    epochs = cfg.train_cfg.max_epochs
    seed = cfg.get('randomness', {}).get('seed')

    exported = None
    if export_to and checkpoint:
        from .runtime.checkpoint import export_weights
        exported = export_weights(checkpoint, export_to,
                                  extra_meta=dict(epochs=epochs, seed=seed,
                                                  val_bbox_mAP_50=map_values(metrics)[0]))
    return dict(metrics=metrics, train_seconds=train_seconds, cpu_seconds=cpu_seconds,
                threads=threads, cpus=usable_cpus(), load_before=load_before,
                load_after=load_after, checkpoint=checkpoint, exported=exported,
                tensorboard_dir=tensorboard_dir(runner), epochs=epochs, seed=seed,
                config=cfg.filename, img_scale=cfg.get('img_scale'))


def tensorboard_command(tb_dir: str, epochs: int) -> str:
    """How to open the logs so that TensorBoard keeps every logged image step (it keeps a random
    10 per tag unless told otherwise)."""
    return f'tensorboard --logdir {tb_dir} --samples_per_plugin images={max(epochs, 10)}'


def summary_lines(result: Dict[str, object]) -> List[str]:
    """The summary the main job prints at the end."""
    map50, map_all = ('-' if v is None else f'{v:.3f}' for v in map_values(result['metrics']))
    train_s, cpu_s = result['train_seconds'], result['cpu_seconds']
    load = [v for v in (result.get('load_before'), result.get('load_after')) if v is not None]
    load_txt = ('; load average ' + ' -> '.join(f'{v:.1f}' for v in load)) if load else ''
    scale = result.get('img_scale')
    scale_txt = f', {scale[0]} px' if isinstance(scale, Sequence) and scale else ''
    lines = [
        '',
        '=' * 72,
        f'demo detector: {osp.basename(str(result["config"]))}, {result["epochs"]} epochs'
        f'{scale_txt}, seed {result["seed"]}',
        (f'val keypoint AP@50 (OKS): {map50}   AP@[.5:.95]: {map_all}'
         if POSE_AP_KEY in result['metrics'] else
         f'val bbox mAP@50: {map50}   mAP@[.5:.95]: {map_all}'),
        f'training wall time: {train_s / 60:.1f} min ({train_s:.0f} s, validations included); '
        f'CPU time of the main process {cpu_s / 60:.1f} min',
        f'{cpu_model()}, {result["cpus"]} usable CPUs, {result["threads"]} torch thread(s)'
        f'{load_txt}',
        f'checkpoint: {result["checkpoint"]}',
    ]
    if result.get('exported'):
        lines.append(f'weights-only export: {result["exported"]}')
    tb_dir = result.get('tensorboard_dir')
    if tb_dir:
        lines += [
            f'TensorBoard logs: {tb_dir}',
            f'open them with:  {tensorboard_command(tb_dir, int(result["epochs"]))}',
        ]
    lines.append('=' * 72)
    return lines


def with_input_size(pipeline: Sequence[dict], size: Sequence[int]) -> List[dict]:
    """A copy of a demo pipeline for another network input ``size`` = (w, h): every ``scale``
    and ``img_scale`` becomes ``size`` and a mosaic ``border`` becomes ``(-w // 2, -h // 2)``,
    in nested transforms too (the main job's config derives its pipelines from the test
    detector's this way instead of restating them)."""
    width, height = (int(v) for v in size)

    def convert(value):
        if isinstance(value, dict):
            out = {key: convert(item) for key, item in value.items()}
            for key in ('scale', 'img_scale'):
                if key in out:
                    out[key] = (width, height)
            if 'border' in out:
                out['border'] = (-width // 2, -height // 2)
            return out
        if isinstance(value, (list, tuple)):
            return type(value)(convert(item) for item in value)
        return value

    return [convert(dict(step)) for step in pipeline]

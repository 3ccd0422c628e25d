"""The main job: generate the demo data (if missing), train the demo detector on the CPU with an
MMEngine Runner, evaluate it and print mAP, wall and CPU time, checkpoint and how to open
TensorBoard. The work itself is in ``mmyolo_vis_hooks.demo``.

Run from the repository root (``bash scripts/demo.sh`` does): paths default to ``data/`` and
``work_dirs/demo/``.
"""
import argparse
from typing import Dict, List, Optional

from mmengine.config import DictAction

from mmyolo_vis_hooks import demo
from mmyolo_vis_hooks.cli.common import ToolArgumentParser, run_tool
from mmyolo_vis_hooks.engine.core.checks import check_int


def build_parser() -> argparse.ArgumentParser:
    parser = ToolArgumentParser(prog='run_demo.py', description=__doc__)
    parser.add_argument('--config', default=demo.DEMO_CONFIG,
                        help='config file. Defaults to the demo')
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
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads of the training process. Defaults to the usable '
                        'CPUs minus the train dataloader workers, at least 1 (1 on a 2-core '
                        'machine: the workers use the other core)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='config overrides, key=value (e.g. train_cfg.val_interval=1)')
    return parser


def run(args: argparse.Namespace) -> Dict[str, object]:
    for flag, value in (('--epochs', args.epochs), ('--threads', args.threads)):
        if value is not None:
            check_int(flag, value, low=1)
    cfg = demo.build_config(args.config, work_dir=args.work_dir, data_dir=args.data_dir,
                            seed=args.seed, epochs=args.epochs, resume=args.resume,
                            cfg_options=args.cfg_options)
    demo.ensure_demo_data(args.data_dir, args.seed, demo.demo_dataset(cfg))
    result = demo.train(cfg, threads=args.threads, export_to=args.export_weights)
    print('\n'.join(demo.summary_lines(result)), flush=True)
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Runs the main job; a bad argument ends in one line ``run_demo.py: error: ...``."""
    return run_tool(build_parser(), run, argv)


if __name__ == '__main__':
    main()

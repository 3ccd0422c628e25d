"""Generates the embedded demo data (synthetic shapes, COCO format) deterministically."""
import argparse

from mmyolo_vis_hooks.cli.common import ToolArgumentParser, run_tool
from mmyolo_vis_hooks.data.synthetic_shapes import generate_demo_data
from mmyolo_vis_hooks.engine.core.checks import check_int


def build_parser() -> argparse.ArgumentParser:
    parser = ToolArgumentParser(prog='make_demo_data.py', description=__doc__)
    parser.add_argument('--out-dir', default='data', help='output folder. Defaults to data')
    parser.add_argument('--seed', type=int, default=0, help='random seed. Defaults to 0')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=80)
    parser.add_argument('--no-large', action='store_true',
                        help='skip the large image and the sliced-evaluation set')
    return parser


def run(args: argparse.Namespace) -> None:
    check_int('--num-train', args.num_train, low=1)
    check_int('--num-val', args.num_val, low=1)
    paths = generate_demo_data(args.out_dir, args.seed, args.num_train, args.num_val,
                               large=not args.no_large)
    for key, path in paths.items():
        print(f'{key}: {path}')


def main(argv=None) -> None:
    run_tool(build_parser(), run, argv)


if __name__ == '__main__':
    main()

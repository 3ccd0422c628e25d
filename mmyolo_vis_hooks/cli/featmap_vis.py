"""Feature maps of chosen layers for images, offline (the engine FeatMapVisHook uses).
Argument parsing and printing only; the work is in ``mmyolo_vis_hooks.engine.featmap``.

Example:
    python tools/featmap_vis.py data/shapes/val configs/demo/yolov5_n_shapes.py \
        work_dirs/demo/best.pth --target-layers backbone neck --out-dir out/featmaps
    python tools/featmap_vis.py img.png CONFIG --preview-model
"""
import argparse
import os.path as osp

from tqdm import tqdm

from ..engine.core.draw import check_alpha, display_image, make_grid
from ..engine.featmap.capture import forward_and_capture, probe_feature_layers
from ..engine.featmap.draw import draw_layer
from ..engine.featmap.reduce import check_reduction
from ..runtime.images import list_images, read_rgb, write_rgb
from ..runtime.models import build_detector, build_image_loader
from .common import (ToolArgumentParser, add_align_arg, add_model_args, add_preview_arg,
                     print_layer_preview, run_tool, show_image)


def build_parser(prog=None) -> argparse.ArgumentParser:
    parser = ToolArgumentParser(prog=prog,
                                description='Visualize feature maps of MMYOLO layers')
    parser.add_argument('img', help='image file, folder, or .txt list of image paths')
    add_model_args(parser)
    parser.add_argument('--out-dir', default='./output', help='output folder')
    parser.add_argument('--out-file', default=None,
                        help='output file for a single image (overrides --out-dir)')
    parser.add_argument('--target-layers', nargs='+', default=['backbone'],
                        help='layer paths, e.g. backbone neck.out_layers[2]')
    parser.add_argument('--channel-reduction', default='select_max',
                        choices=['squeeze_mean', 'select_max', 'none'],
                        help='reduce channels; none draws the --topk most active channels')
    parser.add_argument('--topk', type=int, default=4,
                        help='channels drawn with --channel-reduction none (-1: the map itself)')
    parser.add_argument('--arrangement', nargs=2, type=int, default=[2, 2],
                        help='rows and cols of the top-k grid')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw predicted boxes above this score (above 1: none)')
    parser.add_argument('--alpha', type=float, default=0.5, help='heat opacity')
    parser.add_argument('--max-size', type=int, default=800,
                        help='cap on the long side of each drawn map')
    parser.add_argument('--ncols', type=int, default=2, help='layers per row of the output')
    parser.add_argument('--show', action='store_true', help='show each result in a window')
    add_align_arg(parser)
    add_preview_arg(parser)
    return parser


def run(args: argparse.Namespace) -> None:
    channel_reduction = None if args.channel_reduction == 'none' else args.channel_reduction
    check_reduction(channel_reduction, args.topk, tuple(args.arrangement))
    check_alpha(args.alpha)
    paths = None if args.preview_model else list_images(args.img)
    if paths is not None and args.out_file and len(paths) > 1:
        raise ValueError(f'--out-file takes one image, got {len(paths)}; use --out-dir')
    model = build_detector(args.config, args.checkpoint, args.device, args.cfg_options,
                           unsafe_load=args.unsafe_load, init_weights=True)
    if args.preview_model:
        print_layer_preview(model, max_depth=args.preview_depth)
        return
    probe_feature_layers(model, args.target_layers, owner='--target-layers')
    load_image = build_image_loader(model.cfg, args.align)
    class_names = tuple(model.dataset_meta.get('classes', ()))
    score_thr = args.score_thr if args.score_thr <= 1 else None
    for img_id, path in enumerate(tqdm(paths, desc='feature maps', unit='img')):
        # build_detector returns the model in eval mode; the tool owns it
        captured = forward_and_capture(model, load_image(path, img_id), args.target_layers,
                                       owner='--target-layers')[0]
        image = display_image(read_rgb(path), args.max_size)
        tiles, titles = [], []
        for key, featmap in captured.maps.items():
            tiles.append(draw_layer(image, featmap, captured, channel_reduction,
                                    args.topk, tuple(args.arrangement), args.alpha,
                                    score_thr=score_thr, class_names=class_names))
            titles.append(key)
        grid = make_grid(tiles, titles, ncols=min(args.ncols, len(tiles)))
        out = args.out_file or osp.join(args.out_dir,
                                        osp.splitext(osp.basename(path))[0] + '.png')
        write_rgb(out, grid)
        if args.show:
            show_image(osp.basename(path), grid)
    print(f'wrote {len(paths)} image(s) to {args.out_file or args.out_dir}')


def main(argv=None, prog=None) -> None:
    run_tool(build_parser(prog), run, argv)


if __name__ == '__main__':
    main()

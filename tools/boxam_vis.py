"""Box-level CAMs (one map per detected box) for images, offline; the engine BoxAMVisHook uses.

Flags follow MMYOLO's ``demo/boxam_vis_demo.py``; the differences: each box is explained by its
own class score at the prior that produced it (not by the detector loss with pseudo labels),
every MMYOLO family (YOLOv5/6/7/8, YOLOX, RTMDet, PPYOLOE) works with its default layers, the
maps are aligned with the image through the letterbox, and ``--cfg-options`` reach the model.

Example:
    python tools/boxam_vis.py data/shapes/val configs/demo/yolov5_n_shapes_320.py \\
        tests/assets/yolov5_n_shapes.pth --method gradcam --topk 4 --out-dir out/boxam
    python tools/boxam_vis.py img.png CONFIG CKPT --method eigencam --norm-in-bbox --merge
    python tools/boxam_vis.py img.png CONFIG --preview-model
"""
import argparse
import os
import os.path as osp
import sys

import cv2
from tqdm import tqdm

from mmyolo_vis_hooks.engine.cam import METHODS, BoxCAM
from mmyolo_vis_hooks.engine.cam.visualize import draw_box_cams
from mmyolo_vis_hooks.engine.cli import (add_align_arg, add_model_args, add_preview_arg,
                                         input_size_of, print_layer_preview, show_image)
from mmyolo_vis_hooks.engine.featmap import display_image
from mmyolo_vis_hooks.engine.images import list_images
from mmyolo_vis_hooks.engine.inference import build_detector, build_image_loader
from mmyolo_vis_hooks.engine.render import check_alpha
from mmyolo_vis_hooks.engine.selection import read_rgb


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Visualize box-level CAMs of MMYOLO detectors')
    parser.add_argument('img', help='image file, folder, or .txt list of image paths')
    add_model_args(parser)
    parser.add_argument('--method', default='gradcam', choices=list(METHODS),
                        help='CAM method (gradient-based: gradcam, gradcam++, xgradcam, '
                        'layercam, eigengradcam; gradient-free: eigencam, ablationcam)')
    parser.add_argument('--target-layers', nargs='+', default=None,
                        help='layer paths; default: every neck.out_layers[i] (each box is '
                        'explained on its own pyramid level)')
    parser.add_argument('--topk', type=int, default=8,
                        help='explain the k best boxes per image (-1: every box above '
                        '--score-thr)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='box score threshold')
    parser.add_argument('--norm-in-bbox', action='store_true',
                        help='normalise each map inside its box and zero it outside')
    parser.add_argument('--merge', action='store_true',
                        help='one image-level map (maximum over boxes) instead of one per box')
    parser.add_argument('--out-dir', default='./output', help='output folder')
    parser.add_argument('--show', action='store_true', help='show each result in a window')
    parser.add_argument('--batch-size', type=int, default=32,
                        help='AblationCAM: ablated copies per forward')
    parser.add_argument('--ratio-channels-to-ablate', type=float, default=1.0,
                        help='AblationCAM: share of channels ablated, in (0, 1] (those with the '
                        'most activation inside the boxes; the others weigh 0)')
    parser.add_argument('--alpha', type=float, default=0.5, help='heat opacity')
    parser.add_argument('--max-size', type=int, default=800,
                        help='cap on the long side of each drawn image')
    parser.add_argument('--ncols', type=int, default=None, help='tiles per row (per-box maps)')
    add_align_arg(parser)
    add_preview_arg(parser)
    args = parser.parse_args(argv)
    try:
        check_alpha(args.alpha)
        if args.batch_size < 1:
            raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
        if not 0 < args.ratio_channels_to_ablate <= 1:
            raise ValueError(f'--ratio-channels-to-ablate must be in (0, 1], got '
                             f'{args.ratio_channels_to_ablate}')
        if not 0 <= args.score_thr <= 1:
            raise ValueError(f'--score-thr must be in [0, 1], got {args.score_thr}')
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    model = build_detector(args.config, args.checkpoint, args.device, args.cfg_options,
                           unsafe_load=args.unsafe_load)
    if args.preview_model:
        print_layer_preview(model, input_size_of(model.cfg), args.preview_depth)
        return
    cam = BoxCAM(model, args.method, args.target_layers, score_thr=args.score_thr,
                 topk=args.topk, batch_size=args.batch_size,
                 ratio_channels_to_ablate=args.ratio_channels_to_ablate)
    cam.check_target_layers()  # layers the box scores do not depend on: before any image
    paths = list_images(args.img)
    load_image = build_image_loader(model.cfg, args.align)
    class_names = tuple(model.dataset_meta.get('classes', ()))
    os.makedirs(args.out_dir, exist_ok=True)
    written, empty = 0, []
    for img_id, path in enumerate(tqdm(paths, desc=f'box CAM ({cam.method.name})', unit='img')):
        data = load_image(path, img_id)
        (result, ), (meta, ) = cam.explain_data(data)
        if len(result) == 0:
            empty.append(path)
            tqdm.write(f'{path}: no box above score_thr={args.score_thr}; nothing to explain',
                       file=sys.stderr)
            continue
        image = display_image(read_rgb(path), args.max_size)
        drawn = draw_box_cams(image, result, meta, class_names, args.norm_in_bbox, args.merge,
                              args.alpha, args.ncols)
        out = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        cv2.imwrite(out, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        written += 1
        if args.show:
            show_image(osp.basename(path), drawn)
    print(f'wrote {written} image(s) to {args.out_dir}' +
          (f'; {len(empty)} image(s) without boxes above the threshold' if empty else ''))


if __name__ == '__main__':
    main()

"""Box-level CAMs (one map per detected box) for images, offline; the engine BoxAMVisHook uses.

Flags follow MMYOLO's ``demo/boxam_vis_demo.py``; the differences: each box is explained by its
own class score at the prior that produced it (not by the detector loss with pseudo labels),
every MMYOLO family (YOLOv5/6/7/8, YOLOX, RTMDet, PPYOLOE) works with its default layers, the
maps are aligned with the image through the letterbox, and ``--cfg-options`` reach the model.

Example:
    python tools/boxam_vis.py data/shapes/val configs/demo/yolov5_n_shapes.py \\
        tests/assets/yolov5_n_shapes.pth --method gradcam --topk 4 --out-dir out/boxam
    python tools/boxam_vis.py img.png CONFIG CKPT --method eigencam --norm-in-bbox --merge
    python tools/boxam_vis.py img.png CONFIG CKPT --method drise --num-masks 1000 --grid-size 8
    python tools/boxam_vis.py img.png CONFIG --preview-model
    python tools/boxam_vis.py img.png mmyolo::yolox/pose/yolox-pose_tiny_8xb32-300e-rtmdet-hyp_coco.py \
        CKPT --keypoint 9
"""
import argparse
import os.path as osp
import sys

from tqdm import tqdm

from ..engine.cam import DEFAULT_TARGET, METHODS, TARGETS, BoxCAM
from ..engine.cam.draw import draw_box_cams
from ..engine.core.checks import check_number
from ..engine.core.draw import check_alpha, display_image
from ..runtime.images import list_images, read_rgb, write_rgb
from ..runtime.models import build_detector, build_image_loader
from .common import (ToolArgumentParser, add_align_arg, add_drise_args, add_model_args,
                     add_preview_arg, drise_options, print_layer_preview, run_tool,
                     show_image)


def build_parser(prog=None) -> argparse.ArgumentParser:
    parser = ToolArgumentParser(prog=prog,
                                description='Visualize box-level CAMs of MMYOLO and MMDetection detectors')
    parser.add_argument('img', help='image file, folder, or .txt list of image paths')
    add_model_args(parser)
    parser.add_argument('--method', default='gradcam', choices=list(METHODS),
                        help='CAM method (gradient-based: gradcam, gradcam++, xgradcam, '
                        'layercam, eigengradcam; gradient-free: eigencam, ablationcam; black '
                        'box on the input: drise)')
    parser.add_argument('--target', default=DEFAULT_TARGET, choices=list(TARGETS),
                        help='what gradient methods differentiate for a box: logit = the class '
                        'logit of its label at its prior plus the objectness logit (YOLOv5/v7/X; '
                        'cannot underflow); log_score = the log of its score (underflows for very '
                        'confident boxes). Ignored by eigencam, ablationcam and drise')
    parser.add_argument('--keypoint', type=int, default=None, metavar='INDEX',
                        help='pose detectors (YOLOX-pose): explain keypoint INDEX of each '
                        'person (its visibility at the person\'s candidate; COCO: 0 nose, 9 '
                        'left wrist ...) instead of the person; gradient methods only')
    parser.add_argument('--kpt-thr', type=float, default=0.3,
                        help='pose detectors: draw the keypoints whose visibility score reaches '
                        'this')
    parser.add_argument('--target-layers', nargs='+', default=None,
                        help='layer paths; default: every neck.out_layers[i] (MMYOLO) or the '
                        'neck\'s outputs (MMDetection): each box is explained on its own '
                        'pyramid level; drise ignores them')
    parser.add_argument('--topk', type=int, default=8,
                        help='explain the k best boxes per image (-1: every box above '
                        '--score-thr)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='box score threshold')
    parser.add_argument('--norm-in-bbox', action='store_true',
                        help='normalise each map inside its box and zero it outside')
    parser.add_argument('--norm-in-mask', action='store_true',
                        help='normalise each map inside its instance mask and zero it outside '
                        '(instance-segmentation detectors)')
    parser.add_argument('--merge', action='store_true',
                        help='one image-level map (maximum over boxes) instead of one per box')
    parser.add_argument('--out-dir', default='./output', help='output folder')
    parser.add_argument('--show', action='store_true', help='show each result in a window')
    parser.add_argument('--batch-size', type=int, default=32,
                        help='AblationCAM: ablated copies per forward; D-RISE: masked images '
                        'per forward (memory grows with it, not with --num-masks)')
    parser.add_argument('--ratio-channels-to-ablate', type=float, default=1.0,
                        help='AblationCAM: share of channels ablated, in (0, 1] (those with the '
                        'most activation inside the boxes; the others weigh 0)')
    add_drise_args(parser)
    parser.add_argument('--alpha', type=float, default=0.5, help='heat opacity')
    parser.add_argument('--max-size', type=int, default=800,
                        help='cap on the long side of each drawn image')
    parser.add_argument('--ncols', type=int, default=None, help='tiles per row (per-box maps)')
    add_align_arg(parser)
    add_preview_arg(parser)
    return parser


def run(args: argparse.Namespace) -> None:
    # Options the engine checks too, checked here before the model is built.
    check_alpha(args.alpha)
    check_number('--score-thr', args.score_thr, 0, 1)
    check_number('--kpt-thr', args.kpt_thr, 0, 1)
    if args.norm_in_mask and args.norm_in_bbox:
        raise ValueError('--norm-in-mask and --norm-in-bbox exclude each other: pick one')
    BoxCAM.check_options(method=args.method, batch_size=args.batch_size,
                         ratio_channels_to_ablate=args.ratio_channels_to_ablate,
                         target=args.target, owner='boxam_vis', keypoint=args.keypoint,
                         **drise_options(args))
    paths = None if args.preview_model else list_images(args.img)
    model = build_detector(args.config, args.checkpoint, args.device, args.cfg_options,
                           unsafe_load=args.unsafe_load, init_weights=True)
    if args.preview_model:
        print_layer_preview(model, max_depth=args.preview_depth)
        return
    cam = BoxCAM(model, args.method, args.target_layers, score_thr=args.score_thr,
                 topk=args.topk, batch_size=args.batch_size,
                 ratio_channels_to_ablate=args.ratio_channels_to_ablate, target=args.target,
                 keypoint=args.keypoint, **drise_options(args))
    cam.check_target_layers()  # layers the box scores do not depend on: before any image
    if args.norm_in_mask and not cam.detector.predicts_masks:
        raise ValueError(f'--norm-in-mask needs instance masks; {cam.detector.head_name} '
                         f'({cam.detector.kind}) predicts boxes only: use --norm-in-bbox')
    load_image = build_image_loader(model.cfg, args.align)
    class_names = tuple(cam.detector.class_names)
    written, empty = 0, []
    for img_id, path in enumerate(tqdm(paths, desc=f'box CAM ({cam.method.name})', unit='img')):
        data = load_image(path, img_id)
        (result, ), (meta, ) = cam.explain_data(data)
        if len(result) == 0:
            empty.append(path)
            tqdm.write(f'{path}: no box above score_thr={args.score_thr}; nothing to explain',
                       file=sys.stderr)
            continue
        for line in result.unreliable_messages(class_names):
            tqdm.write(f'{path}: warning: {line}; drawn without heat', file=sys.stderr)
        image = display_image(read_rgb(path), args.max_size)
        drawn = draw_box_cams(image, result, meta, class_names, args.norm_in_bbox, args.merge,
                              args.alpha, args.ncols, args.norm_in_mask,
                              skeleton=cam.detector.skeleton, kpt_thr=args.kpt_thr)
        out = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '.png')
        write_rgb(out, drawn)
        written += 1
        if args.show:
            show_image(osp.basename(path), drawn)
    print(f'wrote {written} image(s) to {args.out_dir}' +
          (f'; {len(empty)} image(s) without boxes above the threshold' if empty else ''))


def main(argv=None, prog=None) -> None:
    run_tool(build_parser(prog), run, argv)


if __name__ == '__main__':
    main()

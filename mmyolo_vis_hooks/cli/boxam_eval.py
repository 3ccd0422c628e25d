"""Which box-CAM method to trust on YOUR detector: faithfulness of every method, measured.

For each image (a folder, a file, a ``.txt`` list, or the images of a COCO annotation file)
and each method asked for, the ``--topk`` best boxes above ``--score-thr`` are explained and
each box's map is scored (``engine/cam/evaluation.py: evaluate_methods``, the library function a
notebook or a hook calls the same way; this tool parses its arguments, builds the detector and
the image loader, and prints): deletion AUC (lower is better) and
insertion AUC (higher is better) of the box's own score as pixels are removed from / revealed
onto a blurred (or mean) image in the map's order, in ``--steps`` steps; with a COCO file also
the pointing game (map maximum within ``--tolerance`` px of the ground-truth box the detection
matches) and the share of map energy inside that box. A box the model no longer detects after a
step scores 0 there.

Prints a table (mean ± std over boxes, time per box of the method: ``BoxCAM.explain_data``
on the image, its data preprocessor included) and writes to
``--out-dir``: ``faithfulness.csv`` and ``faithfulness.json`` (the same numbers; the JSON adds
the mean curves and the settings), ``boxes.csv`` (one row per box and method) and
``faithfulness_curves.png`` (mean deletion and insertion curves per method). ``--reference``
adds two calibration rows on the same boxes: ``(box)``, the box's own rectangle as its map (a
perfectly local map), and ``(uniform)``, a flat map (pixels in random order: no information).

Example:
    python tools/boxam_eval.py data/shapes/annotations/val.json \\
        configs/demo/yolov5_n_shapes.py tests/assets/yolov5_n_shapes.pth \\
        --method gradcam layercam eigencam --topk 3 --steps 16 --out-dir out/eval
"""
import argparse
import os.path as osp
import sys
from typing import Dict

from ..engine.cam import DEFAULT_TARGET, METHODS, TARGETS
from ..engine.cam.evaluation import EvaluationOptions, coco_ground_truth, evaluate_methods
from ..engine.cam.faithfulness import BASELINES, POINTING_TOLERANCE
from ..runtime.images import list_images
from ..runtime.models import build_detector, build_image_loader
from .common import (ToolArgumentParser, add_align_arg, add_drise_args, add_model_args,
                     drise_options, run_tool)


def build_parser(prog=None) -> argparse.ArgumentParser:
    parser = ToolArgumentParser(
        prog=prog, description='Faithfulness of box-level CAM methods on an MMYOLO detector: '
        'deletion/insertion AUC, pointing game and energy in the ground-truth box')
    parser.add_argument('source', help='image file, folder, .txt list of image paths, or a '
                        'COCO annotation .json (its images; ground truth for the pointing game '
                        'and energy)')
    add_model_args(parser)
    parser.add_argument('--method', nargs='+', default=list(METHODS), choices=list(METHODS),
                        help='methods to evaluate (default: all)')
    parser.add_argument('--img-dir', default=None,
                        help='with a COCO file: the folder its file_name entries are relative '
                        'to (default: next to the file, or <parent>/<file stem>, e.g. '
                        'data/shapes/val for data/shapes/annotations/val.json)')
    parser.add_argument('--max-images', type=int, default=None,
                        help='evaluate only the first N images')
    parser.add_argument('--topk', type=int, default=3,
                        help='boxes explained per image, best first (-1: every box above '
                        '--score-thr)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='box score threshold')
    parser.add_argument('--steps', type=int, default=16,
                        help='deletion/insertion steps per curve (the detector runs steps - 1 '
                        'times per box and curve, plus twice per image)')
    parser.add_argument('--baseline', choices=BASELINES, default='blur',
                        help='what removed pixels become: blur (a Gaussian-blurred copy of the '
                        'image) or mean (its per-channel mean)')
    parser.add_argument('--blur-sigma', type=float, default=0.1,
                        help='blur sigma as a share of the image\'s shorter side')
    parser.add_argument('--eval-batch-size', type=int, default=16,
                        help='perturbed images per forward')
    parser.add_argument('--match-iou-thr', type=float, default=0.5,
                        help='a perturbed prediction of the box\'s class is the box when its IoU '
                        'with it is at least this (the best-overlapping one counts)')
    parser.add_argument('--tolerance', type=float, default=POINTING_TOLERANCE,
                        help='pointing game: pixels around the ground-truth box that count as '
                        'a hit (Zhang et al. 2016: 15)')
    parser.add_argument('--target', default=DEFAULT_TARGET, choices=list(TARGETS),
                        help='what gradient methods differentiate for a box (see boxam_vis)')
    parser.add_argument('--target-layers', nargs='+', default=None,
                        help='layer paths; default: every neck.out_layers[i]')
    parser.add_argument('--batch-size', type=int, default=32,
                        help='AblationCAM: ablated copies per forward; D-RISE: masked images '
                        'per forward')
    parser.add_argument('--ratio-channels-to-ablate', type=float, default=1.0,
                        help='AblationCAM: share of channels ablated, in (0, 1]')
    add_drise_args(parser)
    parser.add_argument('--reference', action='store_true',
                        help='add two calibration rows: "(box)", the box\'s own rectangle as its '
                        'map, and "(uniform)", a flat map (pixels in random order)')
    parser.add_argument('--out-dir', default='./output', help='output folder')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_align_arg(parser)
    return parser


def evaluation_options(args: argparse.Namespace) -> EvaluationOptions:
    """The library's options from the command line."""
    return EvaluationOptions(
        score_thr=args.score_thr, topk=args.topk, max_images=args.max_images,
        steps=args.steps, baseline=args.baseline, blur_sigma=args.blur_sigma,
        eval_batch_size=args.eval_batch_size, match_iou_thr=args.match_iou_thr,
        tolerance=args.tolerance, reference=args.reference,
        cam_options=dict(target_layers=args.target_layers, target=args.target,
                         batch_size=args.batch_size,
                         ratio_channels_to_ablate=args.ratio_channels_to_ablate,
                         **drise_options(args)))


def run(args: argparse.Namespace) -> Dict[str, dict]:
    options = evaluation_options(args)
    methods = options.check(args.method, owner='boxam_eval')  # before the model is built
    if not osp.exists(args.source):
        raise FileNotFoundError(f'image, folder, list or annotation file not found: '
                                f'{args.source}')
    is_coco = args.source.lower().endswith('.json')
    if not is_coco:
        images, ground_truth = list_images(args.source), None
    model = build_detector(args.config, args.checkpoint, args.device, args.cfg_options,
                           unsafe_load=args.unsafe_load, init_weights=True)
    if is_coco:
        images, ground_truth = coco_ground_truth(
            args.source, args.img_dir, tuple(model.dataset_meta.get('classes', ())))
    report = evaluate_methods(model, images, methods, options=options,
                              ground_truth=ground_truth,
                              load_image=build_image_loader(model.cfg, args.align),
                              progress=not args.no_progress)
    paths = report.write(args.out_dir, dict(source=args.source, config=args.config,
                                            checkpoint=args.checkpoint, align=args.align,
                                            device=args.device))
    print(f'Faithfulness on {report.settings["images"]} image(s), top {args.topk} boxes above '
          f'{args.score_thr}, {args.steps} steps, {args.baseline} baseline'
          + ('' if is_coco else ' (no ground truth: pointing game and energy need a COCO '
             'file)'))
    print(report.table())
    print('best: ' + ', '.join(f'{key} {method}' for key, method in
                               report.best_methods().items()))
    print(f'wrote {paths["csv"]}, {paths["json"]}, {paths["boxes"]}, {paths["png"]}')
    sys.stdout.flush()
    return report.summary


def main(argv=None, prog=None) -> None:
    run_tool(build_parser(prog), run, argv)


if __name__ == '__main__':
    main()

"""Which box-CAM method to trust on YOUR detector: faithfulness of every method, measured.

For each image (a folder, a file, a ``.txt`` list, or the images of a COCO annotation file)
and each method asked for, the ``--topk`` best boxes above ``--score-thr`` are explained and
each box's map is scored (``engine/cam/faithfulness.py``): deletion AUC (lower is better) and
insertion AUC (higher is better) of the box's own score as pixels are removed from / revealed
onto a blurred (or mean) image in the map's order, in ``--steps`` steps; with a COCO file also
the pointing game (map maximum within ``--tolerance`` px of the ground-truth box the detection
matches) and the share of map energy inside that box. A box the model no longer detects after a
step scores 0 there.

Prints a table (mean ± std over boxes, time per box of the method itself) and writes to
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
import csv
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..engine.cam import DEFAULT_TARGET, METHODS, TARGETS, BoxCAM
from ..engine.cam.compose import box_masks
from ..engine.cam.faithfulness import (BASELINES, POINTING_TOLERANCE, Faithfulness,
                                       check_faithfulness_options, detections_on_original,
                                       ground_truth_scores)
from ..engine.core.checks import check_int, check_number
from ..engine.core.geometry import original_size
from ..engine.slicing.evaluate import category_labels, read_coco_file
from ..runtime.images import list_images
from ..runtime.models import build_detector, build_image_loader
from .common import (ToolArgumentParser, add_align_arg, add_drise_args, add_model_args,
                     drise_options, run_tool)

METRICS = (  # key, heading, better
    ('deletion_auc', 'deletion AUC', 'lower'),
    ('insertion_auc', 'insertion AUC', 'higher'),
    ('pointing_game', 'pointing game', 'higher'),
    ('energy_in_gt', 'energy in GT box', 'higher'),
    ('seconds_per_box', 's / box', 'lower'),
)
# Calibration rows (--reference): what a perfectly local map and a map without information give.
REFERENCES = ('(box)', '(uniform)')


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
                        help='AblationCAM: ablated copies per forward')
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


# ---------------------------------------------------------------------- inputs
def coco_inputs(ann_file: str, img_dir: Optional[str], class_names: Sequence[str]
                ) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """``(image path, (G, 4) xyxy GT boxes, (G, ) labels)`` per image of a COCO file; crowd
    and ignored annotations left out."""
    coco = read_coco_file(ann_file)
    cat_to_label = category_labels(coco, class_names or None, ann_file)
    if not coco['images']:
        raise ValueError(f'{ann_file} lists no images')
    first = coco['images'][0]['file_name']
    if img_dir is None:
        here = osp.dirname(osp.abspath(ann_file))
        stem = osp.splitext(osp.basename(ann_file))[0]
        candidates = [here, osp.join(osp.dirname(here), stem), osp.dirname(here)]
        img_dir = next((c for c in candidates if osp.isfile(osp.join(c, first))), None)
        if img_dir is None:
            raise FileNotFoundError(f'cannot find the images of {ann_file} (its first is '
                                    f'{first!r}; looked in {", ".join(candidates)}); pass '
                                    f'--img-dir')
    by_image: Dict[int, list] = {im['id']: [] for im in coco['images']}
    for ann in coco['annotations']:
        if ann.get('iscrowd', 0) or ann.get('ignore_flag', 0) or ann['image_id'] not in by_image:
            continue
        by_image[ann['image_id']].append(ann)
    out = []
    for image in coco['images']:
        anns = by_image[image['id']]
        boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                           a['bbox'][1] + a['bbox'][3]] for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([cat_to_label[a['category_id']] for a in anns], np.int64)
        path = osp.join(img_dir, image['file_name'])
        if not osp.isfile(path):
            raise FileNotFoundError(f'image {path} of {ann_file} not found (pass --img-dir)')
        out.append((path, boxes, labels))
    return out


def reference_maps(det, meta: dict, input_size: Tuple[int, int]
                   ) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """The calibration maps of :data:`REFERENCES` for the boxes ``det``: (on the network
    input, on the original image) each."""
    boxes = det.boxes.detach().float().cpu()
    own = box_masks(boxes, tuple(input_size)).float()
    own_original = box_masks(detections_on_original(det, meta), original_size(meta)).float()
    return {'(box)': (own, own_original),
            '(uniform)': (torch.ones_like(own), torch.ones_like(own_original))}


def check_args(args: argparse.Namespace) -> None:
    check_number('--score-thr', args.score_thr, 0, 1)
    check_int('--topk', args.topk, accepted='an int (<= 0 for all boxes)')
    if args.max_images is not None:
        check_int('--max-images', args.max_images, low=1)
    check_faithfulness_options(args.steps, args.baseline, args.blur_sigma, args.eval_batch_size,
                               args.match_iou_thr, args.tolerance)
    for method in args.method:
        BoxCAM.check_options(method=method, batch_size=args.batch_size,
                             ratio_channels_to_ablate=args.ratio_channels_to_ablate,
                             target=args.target, owner='boxam_eval', **drise_options(args))


# ---------------------------------------------------------------------- statistics
def _stats(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float], int]:
    """Mean, sample standard deviation (0 for one value) and count of the values that are not
    None; (None, None, 0) when there are none."""
    kept = np.asarray([v for v in values if v is not None], np.float64)
    if not kept.size:
        return None, None, 0
    std = float(kept.std(ddof=1)) if kept.size > 1 else 0.0
    return float(kept.mean()), std, int(kept.size)


def summarize(records: Dict[str, List[dict]], curves: Dict[str, Dict[str, list]]
              ) -> Dict[str, dict]:
    """Per method: box counts, mean/std of each metric, the mean curves."""
    summary = {}
    for method, rows in records.items():
        entry = dict(boxes=len(rows), unreliable=sum(r['unreliable'] for r in rows),
                     gt_matched=sum(r['pointing_game'] is not None for r in rows))
        for key, _, _ in METRICS:
            mean, std, _ = _stats([r[key] for r in rows])
            entry[f'{key}_mean'], entry[f'{key}_std'] = mean, std
        for kind in ('deletion', 'insertion'):
            stack = curves[method][kind]
            entry[f'{kind}_curve'] = (np.mean(np.stack(stack), axis=0).tolist() if stack
                                      else None)
        summary[method] = entry
    return summary


def format_table(summary: Dict[str, dict]) -> str:
    """A Markdown table: one row per method, ``mean ± std`` per metric."""
    head = ['method', 'boxes'] + [f'{title} ({"↓" if better == "lower" else "↑"})'
                                  for _, title, better in METRICS]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for method, entry in summary.items():
        cells = [method, str(entry['boxes'])]
        for key, _, _ in METRICS:
            mean, std = entry[f'{key}_mean'], entry[f'{key}_std']
            digits = 4 if key == 'seconds_per_box' else 3
            cells.append('-' if mean is None else f'{mean:.{digits}f} ± {std:.{digits}f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def best_methods(summary: Dict[str, dict]) -> Dict[str, str]:
    """The best method per metric (lowest deletion AUC and time, highest of the others); the
    calibration rows do not compete."""
    best = {}
    for key, _, better in METRICS:
        scored = [(e[f'{key}_mean'], m) for m, e in summary.items()
                  if e[f'{key}_mean'] is not None and m not in REFERENCES]
        if scored:
            best[key] = (min(scored) if better == 'lower' else max(scored))[1]
    return best


# ---------------------------------------------------------------------- outputs
def write_outputs(out_dir: str, summary: Dict[str, dict], records: Dict[str, List[dict]],
                  fractions: List[float], settings: dict) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(csv=osp.join(out_dir, 'faithfulness.csv'),
                 json=osp.join(out_dir, 'faithfulness.json'),
                 boxes=osp.join(out_dir, 'boxes.csv'),
                 png=osp.join(out_dir, 'faithfulness_curves.png'))
    columns = ['boxes', 'unreliable', 'gt_matched'] + [
        f'{key}_{s}' for key, _, _ in METRICS for s in ('mean', 'std')]
    with open(paths['csv'], 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['method'] + columns)
        for method, entry in summary.items():
            writer.writerow([method] + ['' if entry[c] is None else entry[c] for c in columns])
    box_columns = ['image', 'box', 'label', 'score', 'unreliable'] + [k for k, _, _ in METRICS]
    with open(paths['boxes'], 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['method'] + box_columns)
        for method, rows in records.items():
            for row in rows:
                writer.writerow([method] + ['' if row[c] is None else row[c]
                                            for c in box_columns])
    with open(paths['json'], 'w', encoding='utf-8') as f:
        json.dump(dict(settings=settings, fractions=fractions, methods=summary,
                       best=best_methods(summary)), f, indent=2)
    plot_curves(paths['png'], summary, fractions)
    return paths


def plot_curves(path: str, summary: Dict[str, dict], fractions: Sequence[float]) -> None:
    """Mean deletion and insertion curves per method, side by side (AUC in the legend)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError('the curve plot needs matplotlib: pip install matplotlib') from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    # tab10 without its grey: grey is the calibration rows' colour
    colours = [plt.cm.tab10(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    for ax, kind, better in zip(axes, ('deletion', 'insertion'), ('lower', 'higher')):
        methods = [m for m in summary if m not in REFERENCES]
        for method, entry in summary.items():
            index = methods.index(method) if method in methods else 0
            curve = entry[f'{kind}_curve']
            if curve is None:
                continue
            style = dict(linestyle='--', color='0.3' if method == '(box)' else '0.65',
                         marker='') if method in REFERENCES else dict(
                             marker='.', color=colours[index % len(colours)])
            ax.plot(fractions, curve, linewidth=1.5,
                    label=f'{method} ({entry[f"{kind}_auc_mean"]:.3f})', **style)
        ax.set_title(f'{kind} (AUC {better} is better)')
        ax.set_xlabel('share of image pixels ' + ('removed' if kind == 'deletion' else
                                                  'revealed'))
        ax.set_ylabel("the box's own score")
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title='method (mean AUC)', title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> Dict[str, dict]:
    check_args(args)
    if not osp.exists(args.source):
        raise FileNotFoundError(f'image, folder, list or annotation file not found: '
                                f'{args.source}')
    is_coco = args.source.lower().endswith('.json')
    if not is_coco:
        items = [(path, None, None) for path in list_images(args.source)]
    model = build_detector(args.config, args.checkpoint, args.device, args.cfg_options,
                           unsafe_load=args.unsafe_load)
    class_names = tuple(model.dataset_meta.get('classes', ()))
    if is_coco:
        items = coco_inputs(args.source, args.img_dir, class_names)
    items = items[:args.max_images] if args.max_images else items
    methods = list(dict.fromkeys(m.lower() for m in args.method))
    cams = {m: BoxCAM(model, m, args.target_layers, score_thr=args.score_thr, topk=args.topk,
                      batch_size=args.batch_size,
                      ratio_channels_to_ablate=args.ratio_channels_to_ablate,
                      target=args.target, **drise_options(args)) for m in methods}
    next(iter(cams.values())).check_target_layers()  # the same layers for every method
    faith = Faithfulness(model, args.steps, args.baseline, args.blur_sigma,
                         args.eval_batch_size, args.match_iou_thr)
    load_image = build_image_loader(model.cfg, args.align)
    names = methods + (list(REFERENCES) if args.reference else [])
    records: Dict[str, List[dict]] = {m: [] for m in names}
    curves: Dict[str, Dict[str, list]] = {m: dict(deletion=[], insertion=[]) for m in names}
    fractions: List[float] = []

    def score(name, det, input_maps, original_maps, meta, path, gt_boxes, gt_labels,
              reasons=None, seconds=None):
        """Records the metrics of one image's box maps under ``name``."""
        nonlocal fractions
        result_curves = faith(inputs, det, input_maps, meta)
        fractions = result_curves.fractions.tolist()
        gt = None if gt_boxes is None else ground_truth_scores(
            original_maps, detections_on_original(det, meta), det.labels.tolist(), gt_boxes,
            gt_labels, args.tolerance)
        deletion, insertion = result_curves.deletion_auc, result_curves.insertion_auc
        for k in range(len(det)):
            records[name].append(dict(
                image=osp.basename(path), box=k, label=int(det.labels[k]),
                score=round(float(det.scores[k]), 6),
                unreliable=bool(reasons[k]) if reasons else False,
                deletion_auc=float(deletion[k]), insertion_auc=float(insertion[k]),
                pointing_game=None if gt is None else gt.pointing[k],
                energy_in_gt=None if gt is None else gt.energy[k],
                seconds_per_box=None if seconds is None else seconds / len(det)))
            curves[name]['deletion'].append(result_curves.deletion[k].numpy())
            curves[name]['insertion'].append(result_curves.insertion[k].numpy())

    for img_id, (path, gt_boxes, gt_labels) in enumerate(tqdm(
            items, desc=f'faithfulness ({len(methods)} methods)', unit='img',
            disable=args.no_progress)):
        data = load_image(path, img_id)
        processed = model.data_preprocessor(data, False)
        inputs = processed['inputs']
        meta = dict(processed['data_samples'][0].metainfo)
        det = None
        for method, cam in cams.items():
            start = time.perf_counter()
            result, = cam(inputs)
            seconds = time.perf_counter() - start
            if len(result) == 0:
                continue
            det = result.detections
            score(method, det, result.box_maps(), result.box_maps(meta), meta, path, gt_boxes,
                  gt_labels, result.reasons, seconds)
        if args.reference and det is not None:
            for name, (input_maps, original_maps) in reference_maps(det, meta,
                                                                    inputs.shape[-2:]).items():
                score(name, det, input_maps, original_maps, meta, path, gt_boxes, gt_labels)
    if not any(records.values()):
        raise ValueError(f'no box above --score-thr={args.score_thr} in {len(items)} image(s): '
                         f'nothing to evaluate')
    summary = summarize(records, curves)
    settings = dict(source=args.source, config=args.config, checkpoint=args.checkpoint,
                    images=len(items), topk=args.topk, score_thr=args.score_thr,
                    steps=args.steps, baseline=args.baseline, blur_sigma=args.blur_sigma,
                    match_iou_thr=args.match_iou_thr, tolerance=args.tolerance,
                    target=args.target, align=args.align, device=args.device,
                    **drise_options(args))
    paths = write_outputs(args.out_dir, summary, records, fractions, settings)
    print(f'Faithfulness on {len(items)} image(s), top {args.topk} boxes above '
          f'{args.score_thr}, {args.steps} steps, {args.baseline} baseline'
          + ('' if is_coco else ' (no ground truth: pointing game and energy need a COCO '
             'file)'))
    print(format_table(summary))
    best = best_methods(summary)
    print('best: ' + ', '.join(f'{key} {method}' for key, method in best.items()))
    print(f'wrote {paths["csv"]}, {paths["json"]}, {paths["boxes"]}, {paths["png"]}')
    sys.stdout.flush()
    return summary


def main(argv=None, prog=None) -> None:
    run_tool(build_parser(prog), run, argv)


if __name__ == '__main__':
    main()

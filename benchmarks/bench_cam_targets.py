"""Which target should gradient CAM methods differentiate: the box's logits or its log score?

    .venv/bin/python benchmarks/bench_cam_targets.py [--num-images 16] [--checkpoint PATH]
    .venv/bin/python benchmarks/bench_cam_targets.py --small   # a quick check (the tests)

Part 1, locality on the trained demo detector (``configs/demo/yolov5_n_shapes.py`` +
``tests/assets/yolov5_n_shapes.pth``) over the first ``--num-images`` validation images of
``mmyolo_vis_hooks.data.synthetic_shapes`` (split ``val``, seed 0: the images the tests use),
letterboxed, every box above score 0.3 (``topk=-1``), default target layers (all
``neck.out_layers``). Per method and target, over the boxes:

- ``own box``: mean share of a box map's energy (sum of the [0, 1] map on the original image)
  inside that box;
- ``peak in box``: share of boxes whose map peaks inside their own box;
- ``in GT box``: mean share of a box map's energy inside the ground-truth box it detects (best
  IoU >= 0.5, same class; boxes matching none are left out);
- ``in all GT``: the hook's ``energy_in_gt`` scalar: share of the merged map (maximum over the
  boxes) inside the union of the ground-truth boxes, mean over images;
- ``noise``: boxes reported unreliable (``engine/cam/reliability.py``);
- ``margin``: the smallest, over reliable boxes, of the range of the box's best layer map divided
  by the noise threshold (``NOISE_FACTOR * eps * magnitude``): how far real maps are from it.

Gradient-free methods (eigencam, ablationcam) ignore the target; they are measured once.

Part 2, saturation: the same detector with the objectness bias and the class-0 bias of every
prior raised by 200 (every prior then scores exactly 1.0 in float32 for class 0, as the
random-init models of an earlier bug did), first image, top 4 boxes: unreliable boxes per
target.

Checked claims (the run exits with 1 when one fails; the docs rest on them): LayerCAM and
EigenGradCAM give the same table row for both targets (YOLOv5's 1x1 head: the targets differ
by a factor on the prior's cell); saturated, ``'log_score'`` leaves every box of the gradient
methods unreliable and ``'logit'`` none, and AblationCAM reports every box as noise.
"""
import argparse
import json
import os.path as osp
import sys
import tempfile

import numpy as np
import torch

from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_split
from mmyolo_vis_hooks.engine.cam import METHODS, TARGETS, BoxCAM
from mmyolo_vis_hooks.engine.cam.compose import box_masks
from mmyolo_vis_hooks.engine.cam.methods import BoxCAMMethod
from mmyolo_vis_hooks.engine.cam.reliability import noise_threshold
from mmyolo_vis_hooks.engine.cam.draw import energy_in_boxes, maps_on_image
from mmyolo_vis_hooks.engine.core.geometry import box_iou, original_size
from mmyolo_vis_hooks.runtime.models import build_detector, build_image_loader
from mmyolo_vis_hooks.testing.cam_reference import saturated_model

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py')
DEMO_CHECKPOINT = osp.join(REPO, 'tests', 'assets', 'yolov5_n_shapes.pth')


def ground_truth(ann_file: str):
    """``{file_name: (boxes (G, 4) xyxy, labels (G,))}`` from the COCO file (label = id - 1)."""
    with open(ann_file, encoding='utf-8') as f:
        coco = json.load(f)
    names = {img['id']: img['file_name'] for img in coco['images']}
    out = {name: ([], []) for name in names.values()}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        out[names[ann['image_id']]][0].append([x, y, x + w, y + h])
        out[names[ann['image_id']]][1].append(ann['category_id'] - 1)
    return {name: (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(l, np.int64))
            for name, (b, l) in out.items()}


class MarginRecorder:
    """Wraps a method's ``map_and_magnitude`` to record, per call, each box's map range over
    its noise threshold."""

    def __init__(self, method: BoxCAMMethod) -> None:
        self.ratios = []
        inner = method.map_and_magnitude

        def recorded(ctx):
            raw, magnitude = inner(ctx)
            flat = raw.detach().double().flatten(1)
            span = flat.amax(dim=1) - flat.amin(dim=1)
            self.ratios.append(span / noise_threshold(magnitude).clamp(min=1e-300))
            return raw, magnitude
        method.map_and_magnitude = recorded


def share(heat: torch.Tensor, box: np.ndarray) -> float:
    total = float(heat.sum())
    if total <= 0:
        return float('nan')
    mask = box_masks(torch.as_tensor(box, dtype=torch.float32).reshape(1, 4), heat.shape)[0]
    return float(heat[mask].sum()) / total


def peak_inside(heat: torch.Tensor, box: np.ndarray) -> bool:
    y, x = divmod(int(heat.argmax()), heat.shape[1])
    return bool(box[0] <= x + 0.5 <= box[2] and box[1] <= y + 0.5 <= box[3])


def measure(model, method: str, target: str, images, gt):
    cam = BoxCAM(model, method, score_thr=0.3, topk=-1, target=target)
    recorder = MarginRecorder(cam.method)
    load = build_image_loader(model.cfg)
    own, peaks, in_gt, all_gt, margins = [], [], [], [], []
    total = noisy = 0
    for img_id, path in enumerate(images):
        recorder.ratios.clear()
        (result, ), (meta, ) = cam.explain_data(load(path, img_id))
        gt_boxes, gt_labels = gt[osp.basename(path)]
        size = original_size(meta)
        maps, boxes = maps_on_image(result, meta, size)
        reliable = result.reliable
        total += len(result)
        noisy += int((~reliable).sum())
        if len(result):
            # recorder.ratios: per layer (K,); the best layer of each box
            best = torch.stack(recorder.ratios, dim=1).amax(dim=1)
            margins += best[reliable].tolist()
        ious = box_iou(torch.as_tensor(boxes), torch.as_tensor(gt_boxes)).numpy() \
            if len(gt_boxes) and len(result) else np.zeros((len(result), 0))
        labels = result.detections.labels.cpu().numpy()
        for k in range(len(result)):
            if not reliable[k]:
                continue
            own.append(share(maps[k], boxes[k]))
            peaks.append(peak_inside(maps[k], boxes[k]))
            if ious.shape[1]:
                same = np.where(gt_labels == labels[k], ious[k], -1.0)
                g = int(same.argmax())
                if same[g] >= 0.5:
                    in_gt.append(share(maps[k], gt_boxes[g]))
        energy = energy_in_boxes(result, meta, gt_boxes)
        if energy is not None:
            all_gt.append(energy)
    return dict(boxes=total, noise=noisy, own=np.nanmean(own), peak=np.mean(peaks),
                in_gt=np.nanmean(in_gt), all_gt=np.mean(all_gt),
                margin=min(margins) if margins else float('nan'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-images', type=int, default=16)
    parser.add_argument('--checkpoint', default=DEMO_CHECKPOINT)
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs and the claims hold: 1 image, '
                        'gradcam and layercam')
    args = parser.parse_args()
    if args.small:
        args.num_images, args.methods = 1, ['gradcam', 'layercam']
    failures = []
    torch.set_num_threads(1 if args.small else min(2, torch.get_num_threads()))
    model = build_detector(DEMO_CONFIG, args.checkpoint)
    with tempfile.TemporaryDirectory() as root:
        ann_file = generate_split(root, 'val', SplitSpec(args.num_images), seed=0)
        gt = ground_truth(ann_file)
        images = [osp.join(root, 'val', name) for name in sorted(gt)]
        print(f'demo detector {osp.relpath(args.checkpoint, REPO)}, {len(images)} val images, '
              f'score > 0.3, all boxes, letterbox, layers neck.out_layers[0..2]\n')
        print('| method | target | boxes | noise | own box | peak in box | in GT box | '
              'in all GT | margin |')
        print('|---|---|---|---|---|---|---|---|---|')
        for method in args.methods:
            gradient_free = not METHODS[method].uses_gradients
            rows = {}
            for target in TARGETS[:1] if gradient_free else TARGETS:
                r = rows[target] = measure(model, method, target, images, gt)
                print(f'| {method} | {"(none)" if gradient_free else target} | {r["boxes"]} | '
                      f'{r["noise"]} | {r["own"]:.3f} | {r["peak"]:.3f} | {r["in_gt"]:.3f} | '
                      f'{r["all_gt"]:.3f} | {r["margin"]:.1e} |')
            if method in ('layercam', 'eigengradcam'):
                first, second = (rows[t] for t in TARGETS)
                if any(abs(first[k] - second[k]) > 1e-3 for k in ('own', 'peak', 'in_gt',
                                                                   'all_gt')):
                    failures.append(f'{method}: the targets give different rows')
        print('\nsaturated logits (objectness and class-0 biases +200), first image, top 4 '
              'boxes: unreliable boxes / boxes')
        saturated = saturated_model(model)
        load = build_image_loader(model.cfg)
        for method in ('gradcam', 'layercam', 'ablationcam'):
            cells = []
            for target in TARGETS:
                cam = BoxCAM(saturated, method, score_thr=0.3, topk=4, target=target)
                (result, ), _ = cam.explain_data(load(images[0], 0))
                unreliable = int((~result.reliable).sum())
                expected = len(result) if method == 'ablationcam' or target == 'log_score' \
                    else 0
                if not len(result) or unreliable != expected:
                    failures.append(f'saturated {method}/{target}: {unreliable}/{len(result)} '
                                    f'unreliable, claimed {expected}')
                cells.append(f'{target}: {int((~result.reliable).sum())}/{len(result)}'
                             + (f' ({result.reasons[0].split(":")[0]})' if result.reasons
                                and result.reasons[0] else ''))
            print(f'- {method}: ' + '; '.join(cells))
    if failures:
        print('FAILED: ' + '; '.join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

"""D-RISE time per image: at the limit (against its masked forwards alone) and against the
xaitk-saliency reference pipeline, side by side in one run.

    .venv/bin/python benchmarks/bench_drise.py [--num-masks 200] [--k 4] [--repeats 2]
        [--threads 1 2] [--small]

The trained demo YOLOv5-n (320 px), generated shapes images (``demo_input``), ``K`` boxes per
image, ``N`` masks (grid 16, keep probability 0.5), the SAME masks on every side.

At the limit, per torch thread count: ours (``BoxCAM(model, 'drise')`` end to end: the
unmasked forward and the box selection, mask generation, masking, forwards, decoding,
weights, accumulation) over the network forwards alone (``detector.forward``) of the same
``N`` masked images, made beforehand in the same layout and batches; runs interleaved, median
of the per-repeat ratios. A ratio of 1 would be D-RISE at the cost of its forwards.

- ours: ``BoxCAM(model, 'drise')``: mask generation, forwards of ``--batch-size`` masked
  copies, each serving all K boxes, weights and maps in torch.
- xaitk, all boxes: xaitk-saliency's pipeline (``PerturbationOcclusion``: one black-box
  detection call per masked image, then ``DRISEScoring.generate`` once for all K boxes). The
  black box is the same model, one masked image per forward, every prior reported as a
  proposal (as ours); its masks are ours, precomputed and NOT timed (xaitk's ``RISEGrid``
  generation time for the same N is printed separately).
- xaitk, per box: the same, run once per box (a tool that explains one detection per run):
  K x N forwards.

The maps of ours and of xaitk's scoring are compared (Pearson correlation per box, min over
boxes). Times are medians of ``--repeats`` interleaved runs after a warm-up, as wall and CPU
(process) seconds; absolute numbers carry the load of other processes on this machine, the
ratios are measured under the same load.
"""
import argparse
import os.path as osp
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.cam.drise import masked_copies
from mmyolo_vis_hooks.engine.cam.methods import DRISE
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.runtime.models import build_detector
from mmyolo_vis_hooks.testing.cam_reference import correlation, demo_input

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py')
DEMO_CHECKPOINT = osp.join(REPO, 'tests', 'assets', 'yolov5_n_shapes.pth')


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def det_matrix(preds, index=slice(None)) -> np.ndarray:
    """xaitk's detection rows (x1, y1, x2, y2, objectness, class scores...) of batch 1."""
    return torch.cat([preds.boxes[0, index], preds.objectness[0, index, None],
                      preds.scores[0, index]], dim=-1).numpy()


class Reference:
    """xaitk-saliency's black-box D-RISE on our masks: one masked image per forward."""

    def __init__(self, detector, image: torch.Tensor, masks: np.ndarray) -> None:
        from xaitk_saliency.impls.gen_detector_prop_sal.drise_scoring import DRISEScoring
        self.detector, self.image, self.masks = detector, image, masks
        self.scoring = DRISEScoring()

    @torch.no_grad()
    def detect(self, masked: torch.Tensor) -> np.ndarray:
        return det_matrix(self.detector.candidates(masked))

    def __call__(self, reference_dets: np.ndarray) -> np.ndarray:
        perturbed = np.stack([self.detect(self.image * torch.from_numpy(mask)[None, None])
                              for mask in self.masks])
        return self.scoring.generate(reference_dets, perturbed, self.masks)


def bench_limit(model, args) -> None:
    """Ours over the N masked forwards alone, per thread count (module docstring)."""
    detector = explainable_detector(model)
    inputs = demo_input(model, 320, seed=3)
    method = DRISE(args.num_masks, args.grid_size, 0.5, args.batch_size, seed=0)
    cam = BoxCAM(model, method, topk=args.k)
    masks = method.masks(tuple(inputs.shape[-2:]))
    batches = [masked_copies(inputs[0], batch) for batch in masks.batches(args.batch_size)]

    @torch.no_grad()
    def forwards_alone():
        for batch in batches:
            detector.forward(batch)

    print(f'At the limit: N={args.num_masks}, K={args.k}, batch {args.batch_size}, load average '
          f'{open("/proc/loadavg").read()[:14]}')
    print(f'{"threads":<9}{"ours s":>9}{"forwards s":>12}{"ratio (median)":>16}'
          f'{"ratios":>24}')
    for threads in args.threads:
        torch.set_num_threads(threads)
        ours, alone, ratios = [], [], []
        for repeat in range(args.repeats + 1):  # run 0: warm-up
            _, ours_wall, _ = timed(cam, inputs)
            _, alone_wall, _ = timed(forwards_alone)
            if repeat:
                ours.append(ours_wall)
                alone.append(alone_wall)
                ratios.append(ours_wall / alone_wall)
        print(f'{threads:<9}{statistics.median(ours):>9.2f}{statistics.median(alone):>12.2f}'
              f'{statistics.median(ratios):>16.3f}{" ".join(f"{r:.3f}" for r in ratios):>24}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-masks', type=int, default=200, help='N, masks per image')
    parser.add_argument('--k', type=int, default=4, help='boxes per image')
    parser.add_argument('--images', type=int, default=1, help='generated images')
    parser.add_argument('--batch-size', type=int, default=32, help='ours: masks per forward')
    parser.add_argument('--grid-size', type=int, default=16)
    parser.add_argument('--repeats', type=int, default=2, help='timed runs per side')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                        help='torch thread counts of the limit section (the xaitk comparison '
                        'runs at the first)')
    parser.add_argument('--skip-limit', action='store_true', help='only the xaitk comparison')
    parser.add_argument('--skip-xaitk', action='store_true', help='only the limit section')
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs and agrees (N=64, K=2, 1 repeat)')
    args = parser.parse_args()
    if args.small:
        args.num_masks, args.k, args.repeats = 64, 2, 1
    if args.repeats < 1:
        parser.error('--repeats must be at least 1')
    warnings.filterwarnings('ignore')
    model = build_detector(DEMO_CONFIG, DEMO_CHECKPOINT)
    if not args.skip_limit:
        bench_limit(model, args)
    if not args.skip_xaitk:
        torch.set_num_threads(args.threads[0])
        worst = bench_xaitk(model, args)
        if worst < 0.99:
            print(f'FAILED: ours and xaitk DRISEScoring on the same masks correlate at '
                  f'{worst:.4f} < 0.99', file=sys.stderr)
            sys.exit(1)


def bench_xaitk(model, args) -> float:
    """Ours against xaitk's pipeline (module docstring); returns the smallest correlation."""
    detector = explainable_detector(model)
    method = DRISE(args.num_masks, args.grid_size, 0.5, args.batch_size, seed=0)
    cam = BoxCAM(model, method, topk=args.k)
    print(f'D-RISE, YOLOv5-n demo detector at 320 px, N={args.num_masks} masks (grid '
          f'{args.grid_size}, p=0.5), K={args.k} boxes, ours batch {args.batch_size}, '
          f'{torch.get_num_threads()} torch thread(s), load average '
          f'{open("/proc/loadavg").read()[:14]}')
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid
    image_hw = (320, 320, 3)
    _, wall, cpu = timed(RISEGrid(args.num_masks, args.grid_size, 0.5, seed=0, threads=0),
                         np.zeros(image_hw, np.uint8))
    print(f'(xaitk RISEGrid mask generation for N={args.num_masks}, not counted below: '
          f'{wall:.2f} s wall / {cpu:.2f} s CPU)')
    rows = []
    for seed in range(args.images):
        inputs = demo_input(model, 320, seed=3 + seed)
        with torch.no_grad():
            base = detector.candidates(inputs)
        dets = detector.select(base, 0.3, args.k)[0]
        masks = method.masks((320, 320)).masks(0, args.num_masks).numpy()
        reference = Reference(detector, inputs, masks)
        ref_dets = det_matrix(base, dets.priors)
        times = {'ours': [], 'xaitk all boxes': [], 'xaitk per box': []}
        for repeat in range(args.repeats + 1):  # run 0: warm-up
            (result, ), wall, cpu = timed(cam, inputs)
            ours = result.layer_maps[0].double().numpy()
            if repeat:
                times['ours'].append((wall, cpu))
            theirs, wall, cpu = timed(reference, ref_dets)
            if repeat:
                times['xaitk all boxes'].append((wall, cpu))
            if repeat:  # the all-boxes run warmed the same code up
                per_box, wall, cpu = timed(
                    lambda: [reference(ref_dets[k:k + 1]) for k in range(len(dets))])
                times['xaitk per box'].append((wall, cpu))
        corr = min(correlation(ours[k], theirs[k])
                   for k in range(len(dets)))
        corr_box = min(correlation(ours[k], per_box[k][0])
                       for k in range(len(dets)))
        medians = {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
                   for name, v in times.items()}
        rows.append((seed, len(dets), medians, corr, corr_box))
    print(f'{"image":<7}{"K":>3}{"side":>18}{"wall s":>9}{"CPU s":>9}{"speed-up wall/CPU":>20}'
          f'{"min corr":>10}')
    for seed, k, medians, corr, corr_box in rows:
        ours_wall, ours_cpu = medians['ours']
        for name, (wall, cpu) in medians.items():
            ratio = '' if name == 'ours' else f'{wall / ours_wall:.1f}x / {cpu / ours_cpu:.1f}x'
            shown = {'ours': '', 'xaitk all boxes': f'{corr:.4f}',
                     'xaitk per box': f'{corr_box:.4f}'}[name]
            print(f'{seed:<7}{k:>3}{name:>18}{wall:>9.2f}{cpu:>9.2f}{ratio:>20}{shown:>10}')
    return min(min(corr, corr_box) for _, _, _, corr, corr_box in rows)


if __name__ == '__main__':
    main()

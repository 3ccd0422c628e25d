"""D-RISE: how many masks a map needs, per mask sampling ('random': the paper's independent
masks; 'balanced': the same masks one by one, drawn in balanced blocks), on the demo detector.

    .venv/bin/python benchmarks/bench_drise_masks.py [--min-boxes 20] [--max-masks 1024]
        [--grid-size 16] [--ref-masks 0] [--small]

The trained demo YOLOv5-n (``configs/demo/yolov5_n_shapes.py``), the embedded demo data's
validation images (``generate_split(..., 'val', SplitSpec(80), seed=0)``, letterboxed to
320 px) in order until ``--min-boxes`` boxes are taken (``--topk`` per image, score > 0.3).

Per image and sampling, two independent sets of ``--max-masks`` masks (seeds 1 and 2; the
per-mask weights are cached under ``--cache-dir``). For each ``N`` (powers of 2) and box:

- ``split-half r``: the correlation of the maps of the two sets at ``N`` masks (pixels of the
  image, not the letterbox padding). Both are the converged map plus independent noise, so
  the correlation of one of them with the converged map is ``sqrt(r)`` (the Spearman-Brown
  reliability); ``est. corr`` prints its mean over boxes.
- From ``r`` at the largest ``N``, each box's noise-to-signal ratio ``c = N (1 / r - 1)``
  (Monte-Carlo noise falls as ``1 / N``): the ``N`` that reaches a correlation ``rho`` with
  the converged map is ``c rho^2 / (1 - rho^2)``; the median over boxes is printed for 0.95
  and 0.99.
- ``--ref-masks R``: also the correlation with a reference map of ``R`` 'random' masks
  (seed 3, cached), for each sampling; the reference's own noise caps it.

Same limit (checked; exits 1 when it fails): two samplings that converge to the same map
correlate, at ``2 N`` masks (both sets), as ``sqrt(r_random r_balanced)`` (each one's
correlation with the common limit); the mean observed correlation must reach 0.9 times the
mean of that prediction.

Faithfulness: insertion and deletion AUC (``engine.cam.faithfulness.Faithfulness``, the
metric of ``mmyolo-boxam-eval``; ``--steps``, blur baseline) of the maps of the first set, for
each sampling at ``N_max / 4`` and ``N_max``; means over boxes.
"""
import argparse
import math
import os
import os.path as osp
import statistics
import sys
import time
import warnings

import torch

from mmyolo_vis_hooks.engine.cam.drise import RiseMasks, mask_weights, weighted_mask_sum
from mmyolo_vis_hooks.engine.cam.faithfulness import Faithfulness, content_region
from mmyolo_vis_hooks.engine.core.devices import in_network_layout
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.runtime.models import build_detector, build_image_loader
from mmyolo_vis_hooks.testing.cam_reference import correlation

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py')
DEMO_CHECKPOINT = osp.join(REPO, 'tests', 'assets', 'yolov5_n_shapes.pth')
SAMPLINGS = ('random', 'balanced')
TARGETS = (0.95, 0.99)


def demo_val_images(cache_dir: str) -> list:
    from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_split
    root = osp.join(cache_dir, 'shapes')
    if not osp.isdir(osp.join(root, 'val')):
        generate_split(root, 'val', SplitSpec(80), seed=0)
    folder = osp.join(root, 'val')
    return [osp.join(folder, name) for name in sorted(os.listdir(folder))]


class Image:
    """One letterboxed image, its boxes and a cached weight computation."""

    def __init__(self, model, detector, loader, path: str, topk: int) -> None:
        processed = model.data_preprocessor(loader(path), False)
        self.name = osp.splitext(osp.basename(path))[0]
        self.inputs = processed['inputs']
        self.meta = dict(processed['data_samples'][0].metainfo)
        self.detector = detector
        with torch.no_grad():
            self.base = self.predict(self.inputs)
        self.dets = detector.select(self.base, 0.3, topk, [self.meta])[0]
        top, bottom, left, right = content_region(self.meta, tuple(self.inputs.shape[-2:]))
        self.region = (slice(top, bottom), slice(left, right))

    def predict(self, batch):
        return self.detector.candidates(in_network_layout(batch), [self.meta])

    def masks(self, args, num: int, seed: int, sampling: str) -> RiseMasks:
        return RiseMasks(num, args.grid_size, args.keep_prob, tuple(self.inputs.shape[-2:]),
                         seed, sampling=sampling)

    @torch.no_grad()
    def weights(self, args, num: int, seed: int, sampling: str) -> torch.Tensor:
        """``(num, K)`` weights, cached under ``args.cache_dir``."""
        key = (f'{self.name}_{sampling}_s{seed}_n{num}_g{args.grid_size}_p{args.keep_prob}_'
               f'k{len(self.dets)}_{int(os.path.getmtime(DEMO_CHECKPOINT))}.pt')
        path = osp.join(args.cache_dir, key)
        if osp.isfile(path):
            return torch.load(path)
        weights = torch.cat([w for _, w in mask_weights(
            self.inputs[0], self.dets, self.base, self.predict,
            self.masks(args, num, seed, sampling), args.batch_size)])
        torch.save(weights, path)
        return weights

    def maps(self, args, weights: torch.Tensor, num: int, seed: int, sampling: str
             ) -> torch.Tensor:
        """``(K, H, W)`` maps of the first ``num`` masks of a set."""
        masks = self.masks(args, weights.shape[0], seed, sampling)
        pairs = ((masks.masks(start, min(start + args.batch_size, num)),
                  weights[start:min(start + args.batch_size, num)])
                 for start in range(0, num, args.batch_size))
        return weighted_mask_sum(pairs, num, args.keep_prob)

    def correlations(self, maps_a: torch.Tensor, maps_b: torch.Tensor) -> list:
        return [correlation(a[self.region].numpy(), b[self.region].numpy())
                for a, b in zip(maps_a, maps_b)]


def needed(ratio: float, rho: float) -> float:
    """Masks for a correlation ``rho`` with the converged map, noise-to-signal ``ratio``."""
    return ratio * rho * rho / (1 - rho * rho)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--min-boxes', type=int, default=20, help='boxes measured, at least')
    parser.add_argument('--topk', type=int, default=5, help='boxes per image, at most')
    parser.add_argument('--max-masks', type=int, default=1024, help='masks per set')
    parser.add_argument('--grid-size', type=int, default=16)
    parser.add_argument('--keep-prob', type=float, default=0.5)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--ref-masks', type=int, default=0,
                        help="masks of a 'random' reference map (0: none)")
    parser.add_argument('--steps', type=int, default=12, help='faithfulness steps')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--cache-dir', default='/tmp/mmyolo_vis_drise_masks')
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs (2 boxes, 64 masks, grid 8)')
    args = parser.parse_args()
    if args.small:
        args.min_boxes, args.topk, args.max_masks, args.grid_size, args.steps = 2, 2, 64, 8, 4
    if args.max_masks < 8 or args.max_masks & (args.max_masks - 1):
        parser.error('--max-masks must be a power of 2, at least 8')
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    os.makedirs(args.cache_dir, exist_ok=True)
    started = time.perf_counter()
    model = build_detector(DEMO_CONFIG, DEMO_CHECKPOINT).eval()
    detector = explainable_detector(model)
    loader = build_image_loader(model.cfg)
    images, num_boxes = [], 0
    for path in demo_val_images(args.cache_dir):
        image = Image(model, detector, loader, path, args.topk)
        if len(image.dets):
            images.append(image)
            num_boxes += len(image.dets)
        if num_boxes >= args.min_boxes:
            break
    sizes = [2 ** j for j in range(3, int(math.log2(args.max_masks)) + 1)]
    print(f'D-RISE masks needed: demo detector, {num_boxes} boxes in {len(images)} val images '
          f'({", ".join(i.name for i in images)}), grid {args.grid_size}, p={args.keep_prob}, '
          f'2 sets of up to {args.max_masks} masks per sampling, {args.threads} thread(s), '
          f'load average {open("/proc/loadavg").read()[:14]}')
    split = {s: {n: [] for n in sizes + [2 * args.max_masks]} for s in SAMPLINGS}
    versus_ref = {s: {n: [] for n in sizes} for s in SAMPLINGS}
    cross, faith = [], {(s, n): [] for s in SAMPLINGS for n in (args.max_masks // 4,
                                                                 args.max_masks)}
    faithfulness = Faithfulness(model, steps=args.steps)
    for image in images:
        sets = {(s, seed): image.weights(args, args.max_masks, seed, s)
                for s in SAMPLINGS for seed in (1, 2)}
        reference = None
        if args.ref_masks:
            ref_weights = image.weights(args, args.ref_masks, 3, 'random')
            reference = image.maps(args, ref_weights, args.ref_masks, 3, 'random')
        pooled = {}
        for sampling in SAMPLINGS:
            for num in sizes:
                maps_a, maps_b = (image.maps(args, sets[sampling, seed], num, seed, sampling)
                                  for seed in (1, 2))
                split[sampling][num] += image.correlations(maps_a, maps_b)
                if reference is not None:
                    versus_ref[sampling][num] += image.correlations(maps_a, reference)
                if num in (args.max_masks // 4, args.max_masks):
                    curves = faithfulness(image.inputs, image.dets, maps_a, image.meta)
                    faith[sampling, num] += list(zip(curves.insertion_auc.tolist(),
                                                     curves.deletion_auc.tolist()))
            pooled[sampling] = (maps_a + maps_b) / 2  # both sets: 2 N masks (same coverage)
        split_pooled = {s: [2 * r / (1 + r) for r in split[s][args.max_masks][-len(image.dets):]]
                        for s in SAMPLINGS}  # Spearman-Brown: r of 2 N masks
        observed = image.correlations(pooled['random'], pooled['balanced'])
        predicted = [math.sqrt(max(a, 0) * max(b, 0))
                     for a, b in zip(split_pooled['random'], split_pooled['balanced'])]
        cross += list(zip(observed, predicted))
    print(f'\n{"N":>6}' + ''.join(f'{s + " r":>16}{s + " est.corr":>20}' for s in SAMPLINGS)
          + (''.join(f'{s + " vs ref":>18}' for s in SAMPLINGS) if args.ref_masks else ''))
    for num in sizes:
        row = f'{num:>6}'
        for sampling in SAMPLINGS:
            rs = split[sampling][num]
            row += (f'{statistics.mean(rs):>16.3f}'
                    f'{statistics.mean(math.sqrt(max(r, 0)) for r in rs):>20.3f}')
        if args.ref_masks:
            row += ''.join(f'{statistics.mean(versus_ref[s][num]):>18.3f}' for s in SAMPLINGS)
        print(row)
    print(f'\nmasks for a correlation rho with the converged map (median over boxes, from r at '
          f'N={args.max_masks}):')
    ratios = {}
    for sampling in SAMPLINGS:
        ratios[sampling] = [num * (1 / max(r, 1e-6) - 1) for r, num in
                            zip(split[sampling][args.max_masks], [args.max_masks] * num_boxes)]
        print(f'  {sampling:<9}' + '  '.join(
            f'rho {rho}: {statistics.median(needed(c, rho) for c in ratios[sampling]):8.0f}'
            for rho in TARGETS))
    per_box = [a / b for a, b in zip(ratios['random'], ratios['balanced']) if b > 0]
    print(f"  random / balanced masks for the same correlation: median over boxes "
          f"{statistics.median(per_box):.2f} (boxes {min(per_box):.2f}-{max(per_box):.2f})")
    print('\nfaithfulness (maps of set 1; mean over boxes):')
    for (sampling, num), values in faith.items():
        insertion, deletion = (statistics.mean(v[i] for v in values) for i in (0, 1))
        print(f'  {sampling:<9} N={num:<6} insertion AUC {insertion:.4f}  deletion AUC '
              f'{deletion:.4f}')
    observed = statistics.mean(o for o, _ in cross)
    predicted = statistics.mean(p for _, p in cross)
    print(f'\nsame limit: random vs balanced at {2 * args.max_masks} masks correlate at '
          f'{observed:.3f} (mean over boxes); {predicted:.3f} expected from their noise alone')
    print(f'total {time.perf_counter() - started:.0f} s')
    if observed < 0.9 * predicted:
        print(f'FAILED: random and balanced masks disagree beyond their noise ({observed:.3f} < '
              f'0.9 x {predicted:.3f})', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

"""Channels-last inputs for the CAM engine's gradient-free forwards (D-RISE's masked batches),
side by side with the standard layout in one run.

    .venv/bin/python benchmarks/bench_input_layout.py [--num-masks 200] [--k 4] [--rounds 4]
    .venv/bin/python benchmarks/bench_input_layout.py --small   # a quick check (the tests)

``BoxCAM._predict`` hands its batches to the network through ``core.devices.in_network_layout``
(channels-last on the CPU); the standard variant replaces that function by the identity for
its runs. Rounds alternate the order of the two; the first round is a warm-up. Prints the
median wall and CPU seconds, their ratio, and how far the maps of the two differ. The maps are
claimed equal (the same boxes, every box's map correlating at >= 0.9999): the run exits with 1
when they are not. Measured figures: docs/benchmarks.md.
"""
import argparse
import os.path as osp
import statistics
import sys
import time
import warnings

import torch

from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.cam import engine as cam_engine
from mmyolo_vis_hooks.engine.cam.methods import DRISE
from mmyolo_vis_hooks.runtime.models import build_detector
from mmyolo_vis_hooks.testing.cam_reference import correlation, demo_input

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# What the docs claim for equal maps; the run exits with 1 when a box falls below.
MIN_CORRELATION = 0.9999


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-masks', type=int, default=200)
    parser.add_argument('--k', type=int, default=4, help='boxes explained')
    parser.add_argument('--rounds', type=int, default=4, help='rounds, the first a warm-up')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs and agrees (N=16, K=2, 2 rounds)')
    args = parser.parse_args()
    if args.small:
        args.num_masks, args.k, args.rounds = 16, 2, 2
    if args.rounds < 2:
        parser.error('--rounds must be at least 2 (the first is a warm-up)')
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    model = build_detector(osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py'),
                           osp.join(REPO, 'tests', 'assets', 'yolov5_n_shapes.pth'))
    cam = BoxCAM(model, DRISE(args.num_masks, 16, 0.5, 32, seed=0), topk=args.k)
    inputs = demo_input(model, 320, seed=3)
    channels_last = cam_engine.in_network_layout
    layouts = {'standard': lambda x, model=None: x, 'channels-last': channels_last}
    times = {name: [] for name in layouts}
    maps = {}
    try:
        for r in range(args.rounds):
            for name in (list(layouts) if r % 2 else list(layouts)[::-1]):
                cam_engine.in_network_layout = layouts[name]
                wall, cpu = time.perf_counter(), time.process_time()
                result = cam(inputs)[0]
                if r:
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
                maps[name] = (result.detections.labels.tolist(),
                              result.layer_maps[0].double())
    finally:
        cam_engine.in_network_layout = channels_last
    print(f'D-RISE, N={args.num_masks}, K={len(maps["standard"][0])} boxes, batch 32, '
          f'{args.threads} thread(s), {args.rounds - 1} timed round(s), load average '
          f'{open("/proc/loadavg").read()[:14]}')
    med = {name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for name, v in times.items()}
    for name, (wall, cpu) in med.items():
        print(f'  {name:<14} {wall:7.2f} s wall {cpu:7.2f} s CPU')
    print(f'  channels-last / standard: wall {med["channels-last"][0] / med["standard"][0]:.2f}, '
          f'CPU {med["channels-last"][1] / med["standard"][1]:.2f}')
    (labels, standard), (labels_cl, channels_last) = maps['standard'], maps['channels-last']
    if labels != labels_cl:  # maps of different boxes are not comparable
        print(f'FAILED: the two layouts explained different boxes (labels {labels} and '
              f'{labels_cl})', file=sys.stderr)
        sys.exit(1)
    diff = float((standard - channels_last).abs().max())
    corr = min(correlation(a.numpy(), b.numpy()) for a, b in zip(standard, channels_last))
    print(f'  maps: max |difference| {diff:.1e}, min correlation per box {corr:.12f}')
    if not corr >= MIN_CORRELATION:
        print(f'FAILED: maps correlate at {corr:.6f} (min per box), claimed >= '
              f'{MIN_CORRELATION}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

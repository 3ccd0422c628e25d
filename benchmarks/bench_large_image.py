"""Sliced inference on the embedded large image: speed side by side, and quality.

Prints, measured in ONE run, each variant timed once per round with the variants interleaved
(so load from other processes hits them alike) and the median over rounds reported:

(a) limit: the network's forward alone (backbone, neck, head; ``model(x, mode='tensor')``) over
    the same slices at the same batch size, inputs preprocessed beforehand, no decoding/NMS,
    inputs in PyTorch's standard (contiguous NCHW) layout, as a plain forward gets them;
(a2) the same forward on channels-last inputs: the forward the tool itself runs on the CPU
    (``BatchPredictor``); (b)/(a2) is the tool's overhead over its own forward;
(b) the tool end to end (``LargeImageRunner.run``: read the PNG, slice, letterbox, data
    preprocessor, forward, decode, merge, draw, write the annotated PNG and the JSON), with the
    model already built;
(b0) its sliced inference alone, on the image in memory, with ``sliced_predict``'s default
    (the helper thread reads/preprocesses the next batch and decodes the last one only when a
    core is free beside the model); (b0p) with the helper forced on; (b0s) all in series;
(c) sahi's ``get_sliced_prediction`` with our adapter at batch size 1, same merge, no
    standard (full-image) pass, reading the same file; it draws and writes nothing;
(d) (b) with ``--fuse-conv-bn``;
(e) the tool on a folder of ``--folder-copies`` variants of the image (flipped; written like
    the embedded one), per image: the next image is decoded and the last picture written on
    background threads while the current one is sliced. Targets: (b)/(a2) <= 1.15 and
    (e)/(N x (a2)) <= 1.10 (the tool's overhead over its own forward, one image / a folder).

Then the phases of (b), each timed on its own in the same rounds (``--no-phases`` skips them):
PNG decode, slicing + preprocessing, the forward, the head's decoding (the batched replacement
the tool uses, and the head's own per-image ``predict_by_feat`` for comparison), merging,
drawing, writing the annotated PNG (the tool's stored-PNG writer, and OpenCV's for comparison);
each as a share of (a2).

With ``--threads 1 2`` both thread counts run in every round, one after the other (which
goes first alternates), and their ratios are printed side by side. The measured figures, and
the commands that gave them, are in docs/benchmarks.md.

Then how many boxes agree (same label, IoU >= 0.95, one-to-one) between (b) and (c), and (b)
and (d); and recall/precision against the image's ground truth (IoU >= 0.5, same label) for
sliced inference with a class-wise merge, with a class-agnostic merge, and for plain
full-image inference (the image letterboxed to the model input). The boxes of (b) and (c),
and of (b) and (d), are claimed equal: the run exits with 1 when they are not (timings are
printed, never checked).

Usage::

    python benchmarks/bench_large_image.py [--threads 1 2] [--rounds 5]
    python benchmarks/bench_large_image.py --small   # a quick check (the tests run it)
"""
import argparse
import copy
import os
import os.path as osp
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List

import cv2
import numpy as np
import torch

from mmyolo_vis_hooks.engine.core.devices import core_free_beside
from mmyolo_vis_hooks.engine.slicing import (BatchPredictor, Detections, MergeConfig,
                                             SliceSettings, draw_detections,
                                             load_coco_ground_truth, match_detections,
                                             matched_fraction, merge_detections, read_window,
                                             resolve_patch_size, slice_windows, sliced_predict)
from mmyolo_vis_hooks.runtime.images import read_image, write_rgb
from mmyolo_vis_hooks.runtime.large_image import LargeImageRunner
from mmyolo_vis_hooks.runtime.memory import keep_freed_memory
from mmyolo_vis_hooks.runtime.models import build_detector
from mmyolo_vis_hooks.sahi_adapter import MMYOLODetectionModel

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=osp.join(ROOT, 'configs/demo/yolov5_n_shapes.py'))
    parser.add_argument('--checkpoint', default=osp.join(ROOT, 'tests/assets/yolov5_n_shapes.pth'))
    parser.add_argument('--image', default=osp.join(ROOT, 'data/large/large_00000.png'))
    parser.add_argument('--ann', default=osp.join(ROOT, 'data/large/large.json'))
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--patch-size', type=int, default=None)
    parser.add_argument('--overlap', type=float, default=0.25)
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--merge-iou-thr', type=float, default=0.25)
    parser.add_argument('--class-agnostic', action='store_true',
                        help='merge class-agnostically in the timed runs')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--folder-copies', type=int, default=8,
                        help='also time the tool on a folder of this many variants of the image '
                        '(flipped copies; reads and writes then overlap inference); 0 to skip')
    parser.add_argument('--no-phases', action='store_true',
                        help='skip timing the phases of (b) one by one')
    parser.add_argument('--threads', type=int, nargs='+', default=None,
                        help='torch intra-op thread counts (default: torch\'s own choice); '
                        'several (e.g. 1 2) are measured in the same rounds, interleaved, '
                        'so their ratios are measured under the same load')
    parser.add_argument('--only', nargs='+', default=None, metavar='KEY',
                        help='time only these variants (e.g. a2 b b0w bw e; p for the phases); '
                        'the box checks then cover the variants timed')
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs and that the box claims hold: a '
                        'generated 1000x700 image, 1 round, a folder of 2 copies, 1 thread '
                        'unless --threads says otherwise')
    args = parser.parse_args()
    if args.small:
        args.rounds, args.folder_copies = 1, 2
        args.threads = args.threads or [1]
    return args


def small_image(folder: str):
    """A generated 1000x700 image with its ground truth (what the tests use)."""
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    ann = generate_large_image(folder, seed=3, width=1000, height=700, num_objects=30)
    return osp.join(folder, 'large_00000.png'), ann


def sahi_detections(result) -> Detections:
    preds = result.object_prediction_list
    return Detections(np.array([p.bbox.to_xyxy() for p in preds]).reshape(-1, 4),
                      np.array([p.score.value for p in preds]),
                      np.array([p.category.id for p in preds]))


# The boxes the docs claim equal: the tool vs sahi with our adapter (same merge), and the tool
# vs the tool with --fuse-conv-bn; the run exits with 1 when a share falls below.
MIN_MATCHED = 1.0


def main():
    args = parse_args()
    # As the tool's main() does; for every variant alike (sahi's and the limit too).
    kept = keep_freed_memory()
    thread_counts = args.threads or [torch.get_num_threads()]
    from mmcv.cnn import fuse_conv_bn
    from sahi.predict import get_sliced_prediction

    out_root = tempfile.mkdtemp(prefix='bench_large_')
    if args.small:
        args.image, args.ann = small_image(osp.join(out_root, 'small'))
    have_ckpt = osp.isfile(args.checkpoint)
    t0 = time.perf_counter()
    model = build_detector(args.config, args.checkpoint if have_ckpt else None)
    build_s = time.perf_counter() - t0
    fused = fuse_conv_bn(copy.deepcopy(model))
    predictor, fused_predictor = BatchPredictor(model), BatchPredictor(fused)
    merge = MergeConfig('nms', 'IOU', args.merge_iou_thr, args.class_agnostic)
    settings = SliceSettings(patch_size=args.patch_size, overlap_ratio=args.overlap,
                             batch_size=args.batch_size, score_thr=args.score_thr, merge=merge)
    patch = resolve_patch_size(settings, predictor)
    adapter = MMYOLODetectionModel(model=model, confidence_threshold=args.score_thr)

    image = read_image(args.image)
    height, width = image.shape[:2]
    windows = slice_windows(height, width, patch, args.overlap)
    # The tool's own inputs (channels-last on the CPU) and the same values in standard layout.
    tool_batches = [
        predictor.preprocess([read_window(image, w) for w in windows[i:i + args.batch_size]])[0]
        for i in range(0, len(windows), args.batch_size)
    ]
    batches = [x.contiguous() for x in tool_batches]
    assert all(torch.equal(x, y) for x, y in zip(batches, tool_batches))

    outputs: Dict[str, Detections] = {}
    # runner.timings of each run of a tool variant, per (variant, thread count)
    phases: Dict[tuple, List[Dict[str, float]]] = {}
    threads_now = [thread_counts[0]]

    def forward_only(inputs=batches):
        with torch.no_grad():
            for x in inputs:
                model(x, mode='tensor')

    folder = []
    for k in range(args.folder_copies):
        # flipped variants (other boxes, same decode cost), PNG written as the embedded one
        folder.append(osp.join(out_root, 'folder', f'var{k}_{osp.basename(args.image)}'))
        os.makedirs(osp.dirname(folder[-1]), exist_ok=True)
        variant = image[::-1 if k & 1 else 1, ::-1 if k & 2 else 1]
        cv2.imwrite(folder[-1], cv2.cvtColor(np.ascontiguousarray(variant), cv2.COLOR_RGB2BGR))

    def tool(pred: BatchPredictor, key: str, paths=(args.image, )) -> Callable[[], None]:
        def run():
            runner = LargeImageRunner(pred, settings, osp.join(out_root, key), progress=False)
            doc = runner.run(list(paths))
            phases.setdefault((key, threads_now[0]), []).append(dict(runner.timings))
            if key not in ('b', 'd'):
                return
            anns = doc['annotations']
            outputs[key] = Detections(
                np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                           a['bbox'][1] + a['bbox'][3]] for a in anns]).reshape(-1, 4),
                np.array([a['score'] for a in anns]),
                np.array([a['category_id'] - 1 for a in anns]))
        return run

    def engine_only(pipelined=None):
        sliced_predict(predictor, image, settings, pipelined=pipelined)

    def engine_split(picture: np.ndarray) -> Detections:
        """Experiment, not the tool: torch's N threads as N workers of 1 thread, each
        preparing, running and decoding its own half of the slices (batches of up to
        ``--batch-size``), so no OpenMP team waits at a barrier for a core another worker's
        serial step took."""
        threads = torch.get_num_threads()
        halves = [h for h in np.array_split(np.arange(len(windows)), threads) if len(h)]

        def work(indices):
            found = []
            for i in range(0, len(indices), args.batch_size):
                part = windows[indices[i:i + args.batch_size]]
                inputs, metas = predictor.preprocess([read_window(picture, w) for w in part])
                bboxes, scores, labels, index = predictor.decode_flat(
                    predictor.forward(inputs), metas, args.score_thr)
                found.append(Detections(bboxes + np.tile(part[index, :2], 2).astype(np.float32),
                                        scores, labels))
            return found
        torch.set_num_threads(1)
        try:
            with predictor.guard(), ThreadPoolExecutor(len(halves)) as pool:
                parts = [d for found in pool.map(work, halves) for d in found]
        finally:
            torch.set_num_threads(threads)
        merged = merge_detections(Detections.concat(parts), merge)
        return merged.select(merged.scores > args.score_thr)

    def tool_split():
        """(b) with ``engine_split`` in place of ``sliced_predict``: decode the PNG, infer,
        draw, write the picture (no JSON)."""
        picture = read_image(args.image)
        merged = engine_split(picture)
        outputs['bw'] = merged
        write_rgb(osp.join(out_root, 'split.png'),
                  draw_detections(picture, merged, model.dataset_meta['classes']), 0)

    def sahi_b1():
        res = get_sliced_prediction(
            args.image, adapter, slice_height=patch, slice_width=patch,
            overlap_height_ratio=args.overlap, overlap_width_ratio=args.overlap,
            perform_standard_pred=False, postprocess_type=merge.sahi_postprocess_type,
            postprocess_match_metric=merge.metric, postprocess_match_threshold=merge.threshold,
            postprocess_class_agnostic=merge.class_agnostic, verbose=0, batch_size=1)
        outputs['c'] = sahi_detections(res)

    variants = [('a', 'forward alone (limit), standard layout', forward_only),
                ('a2', 'forward alone, channels-last (the tool\'s)',
                 lambda: forward_only(tool_batches)),
                ('b', 'tool end to end', tool(predictor, 'b')),
                ('b0', 'its sliced inference only (image in memory)', engine_only),
                ('b0p', '(b0) pipelined (helper thread forced on)', lambda: engine_only(True)),
                ('b0s', '(b0) in series (pipelined=False)', lambda: engine_only(False)),
                ('b0w', '(b0) as N workers of 1 thread (experiment)',
                 lambda: engine_split(image)),
                ('bw', '(b) with (b0w) inside (experiment)', tool_split),
                ('c', 'sahi get_sliced_prediction + adapter, batch 1', sahi_b1),
                ('d', 'tool end to end, --fuse-conv-bn', tool(fused_predictor, 'd'))]
    if folder:
        variants.append(('e', f'tool on a folder of {len(folder)} copies', tool(predictor, 'e',
                                                                               folder)))
    per_image_predictor = BatchPredictor(model, batched_decode=False)
    # per thread count: phase name -> wall s of each call
    phase_times: Dict[int, Dict[str, List[float]]] = {t: {} for t in thread_counts}

    def time_phases():
        """The steps of (b) one by one (wall s), as the tool runs them for one image."""
        def timed(name, func, *args):
            start = time.perf_counter()
            out = func(*args)
            phase_times[threads_now[0]].setdefault(name, []).append(
                time.perf_counter() - start)
            return out
        img = timed('PNG decode (read_image)', read_image, args.image)
        batches = []
        with predictor.guard():
            for i in range(0, len(windows), args.batch_size):
                crops = [read_window(img, w) for w in windows[i:i + args.batch_size]]
                batches.append(timed('slicing + preprocess', predictor.preprocess, crops))
            outs = [timed('forward', predictor.forward, x) for x, _ in batches]
            flat = [timed('decode, batched (the tool)', predictor.decode_flat, o, metas,
                          args.score_thr) for o, (_, metas) in zip(outs, batches)]
            for o, (_, metas) in zip(outs, batches):
                timed('decode, per-image predict_by_feat', per_image_predictor.decode_flat, o,
                      metas, args.score_thr)
        offsets = [np.tile(windows[i:i + args.batch_size][f[3], :2], 2)
                   for i, f in zip(range(0, len(windows), args.batch_size), flat)]
        dets = Detections(np.concatenate([f[0] for f in flat]) + np.concatenate(offsets),
                          np.concatenate([f[1] for f in flat]),
                          np.concatenate([f[2] for f in flat]))
        merged = timed('merge', merge_detections, dets, merge)
        picture = timed('draw', draw_detections, read_window(img, np.array([0, 0, width, height])),
                        merged, model.dataset_meta['classes'])
        timed('write annotated PNG (stored)', write_rgb, osp.join(out_root, 'phase.png'),
              picture, 0)
        timed('  the same by OpenCV (libpng level 0)', cv2.imwrite,
              osp.join(out_root, 'phase_cv2.png'), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
              [cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE])

    if not args.no_phases:
        variants.append(('p', 'phases of (b) one by one (not a variant)', time_phases))
    if args.only:
        variants = [v for v in variants if v[0] in args.only]
    times: Dict[tuple, List[float]] = {(k, t): [] for k, _, _ in variants for t in thread_counts}
    cpu: Dict[tuple, List[float]] = {(k, t): [] for k, _, _ in variants for t in thread_counts}
    helper_default = {}
    load_before = os.getloadavg()
    for threads in thread_counts:
        torch.set_num_threads(threads)
        forward_only()  # warm-up (allocator, priors cache, this thread count's kernels)
        helper_default[threads] = core_free_beside(predictor.device)
    for r in range(args.rounds):
        # Thread counts alternate within the round, variants rotate: load hits them alike.
        shift = r % len(thread_counts)
        for threads in thread_counts[shift:] + thread_counts[:shift]:
            threads_now[0] = threads
            torch.set_num_threads(threads)
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for key, _, func in order:
                t, c = time.perf_counter(), time.process_time()
                func()
                times[key, threads].append(time.perf_counter() - t)
                cpu[key, threads].append(time.process_time() - c)
    load_after = os.getloadavg()

    print(f'image {osp.basename(args.image)} {width}x{height}, {len(windows)} slices of {patch} px '
          f'(overlap {args.overlap}), batch size {args.batch_size}, torch threads '
          f'{", ".join(map(str, thread_counts))} (interleaved in each round), checkpoint: '
          f'{args.checkpoint if have_ckpt else "NONE (random init)"}')
    print(f'merge: {merge.method} {merge.metric} {merge.threshold} '
          f'{"class-agnostic" if merge.class_agnostic else "class-wise"}, '
          f'score > {args.score_thr}; '
          f'model build {build_s:.2f} s (not in the timings); {args.rounds} rounds, median; '
          f'load average before/after {load_before[0]:.1f}/{load_after[0]:.1f}; glibc keeps freed '
          f'memory (the tool\'s setting, all variants): {kept}')

    def ratio(num, den, threads, scale=1):
        if not times.get((num, threads)) or not times.get((den, threads)):
            return 'wall - (not timed)'
        out = []
        for name, table in (('wall', times), ('CPU', cpu)):
            per_round = [n / (scale * d) for n, d in zip(table[num, threads],
                                                         table[den, threads])]
            out.append(f'{name} {statistics.median(per_round):.3f} ['
                       + ', '.join(f'{r:.2f}' for r in per_round) + ']')
        return '   '.join(out)

    for threads in thread_counts:
        print(f'\n--- torch on {threads} thread(s); sliced_predict\'s helper thread by default '
              f'(a core free beside the model): {helper_default[threads]}')
        print(f'  {"":52s} {"wall s":>7s}  {"CPU s":>6s}   [wall per round]')
        for key, name, _ in variants:
            runs = ', '.join(f'{t:.2f}' for t in times[key, threads])
            wall, process = (statistics.median(table[key, threads]) for table in (times, cpu))
            print(f'  {"(" + key + ")":4s} {name:<47s} {wall:7.2f}  {process:6.2f}   [{runs}]')
        runs_b = phases.get(('b', threads))
        if runs_b:
            split = {k: statistics.median(p[k] for p in runs_b) for k in runs_b[0]}
            print('      (b) by phase, median s: '
                  + ', '.join(f'{k} {v:.3f}' for k, v in split.items())
                  + ' (read_wait: PNG decode; write_wait: the annotated PNG still being encoded)')
        print('  ratios: median over rounds of the ratio within a round (variants run back to '
              'back); CPU = process time of all threads, steadier than wall time when other jobs '
              'share the cores')
        n = len(folder)
        for label, num, den, scale, note in (
                ('(b)/(a) ', 'b', 'a', 1, ''),
                ('(a2)/(a)', 'a2', 'a', 1, '< 1: channels-last inputs gain'),
                ('(b)/(a2)', 'b', 'a2', 1, 'target <= 1.15: the tool\'s overhead over its own '
                 'forward'),
                ('(b0)/(a2)', 'b0', 'a2', 1, 'the same without PNG decode/encode and drawing'),
                ('(b0p)/(a2)', 'b0p', 'a2', 1, '(b0) with the helper thread forced on'),
                ('(b0s)/(a2)', 'b0s', 'a2', 1, '(b0) with every step in series on one thread'),
                ('(b0w)/(a2)', 'b0w', 'a2', 1, 'experiment: N workers of 1 thread'),
                ('(bw)/(a2)', 'bw', 'a2', 1, 'experiment: (b) with them inside'),
                ('(c)/(b) ', 'c', 'b', 1, '> 1: the tool is faster than sahi at batch 1'),
                ('(d)/(b) ', 'd', 'b', 1, '< 1: --fuse-conv-bn gains'),
                (f'(e)/({n}x(a)) ', 'e', 'a', n, 'per image, reading the next and writing the '
                 'last image overlapping inference'),
                (f'(e)/({n}x(a2))', 'e', 'a2', n, 'target <= 1.10 per image on a folder')):
            if times.get((num, threads)) and times.get((den, threads)):
                print(f'  {label} {ratio(num, den, threads, scale)}   {note}')
        if phase_times[threads] and times.get(('a2', threads)):
            forward = statistics.median(times['a2', threads])
            print(f'  phases of (b) one by one, median wall s over {args.rounds} rounds, and as '
                  f'a share of (a2) {forward:.3f} s:')
            for name, values in phase_times[threads].items():
                calls = len(values) // args.rounds  # per round, consecutive
                per_round = [sum(values[i * calls:(i + 1) * calls]) for i in range(args.rounds)]
                med_phase = statistics.median(per_round)
                print(f'    {name:<36s} {med_phase:7.3f}  {med_phase / forward:6.1%}')
    if len(thread_counts) > 1:
        print('\nside by side (wall, median of per-round ratios): ' + '; '.join(
            f'{t} thread(s): (b)/(a2) {ratio("b", "a2", t).split()[1]}, (bw)/(a2) '
            f'{ratio("bw", "a2", t).split()[1]}'
            + (f', (e)/({len(folder)}x(a2)) {ratio("e", "a2", t, len(folder)).split()[1]}'
               if folder else '') for t in thread_counts))
    if 'b' not in outputs:
        # (b) not timed: its boxes from the engine, which the tool writes
        outputs['b'] = sliced_predict(predictor, image, settings).detections
    b = outputs['b']
    shares = {}
    for key in ('c', 'd'):
        if key in outputs:
            shares[f'({key}) in (b)'] = matched_fraction(outputs[key], b)
            shares[f'(b) in ({key})'] = matched_fraction(b, outputs[key])
    print(f'\n  boxes: ' + ', '.join(f'({k}) {len(v)}' for k, v in outputs.items() if k != 'bw')
          + '; same label & IoU >= 0.95: ' + ', '.join(f'{k} {v:.1%}' for k, v in shares.items()))
    failures = [f'{k} {v:.1%}' for k, v in shares.items() if not v >= MIN_MATCHED]
    if 'bw' in outputs:
        split = outputs['bw']
        print(f'  experiment (bw): {len(split)} boxes, (bw) in (b) '
              f'{matched_fraction(split, b):.1%}, (b) in (bw) {matched_fraction(b, split):.1%} '
              '(other batches and kernels: printed, not checked)')

    if osp.isfile(args.ann):
        print_quality(args, model, predictor, image, patch)
    else:
        print(f'no ground truth at {args.ann}: quality table skipped')
    shutil.rmtree(out_root, ignore_errors=True)
    if failures:
        print(f'FAILED: boxes claimed equal are not: {"; ".join(failures)} matched',
              file=sys.stderr)
        sys.exit(1)


def print_quality(args, model, predictor: BatchPredictor, image: np.ndarray, patch: int) -> None:
    """Recall/precision against the image's ground truth for several merges and for the
    letterboxed full image."""
    height, width = image.shape[:2]
    classes = model.dataset_meta.get('classes')
    gt_boxes, gt_labels = load_coco_ground_truth(args.ann, osp.basename(args.image), classes)
    rows = []
    iou = args.merge_iou_thr
    merges = (('sliced, class-wise NMS IOU', MergeConfig('nms', 'IOU', iou, False)),
              ('sliced, class-agnostic NMS IOU', MergeConfig('nms', 'IOU', iou, True)),
              # sahi's default postprocess, and the same merge measures with NMS
              ('sliced, GREEDYNMM IOS 0.5 (sahi)', MergeConfig('greedynmm', 'IOS', 0.5, False)),
              ('sliced, GREEDYNMM IOS 0.5 agnostic', MergeConfig('greedynmm', 'IOS', 0.5, True)),
              ('sliced, NMS IOS 0.5 agnostic', MergeConfig('nms', 'IOS', 0.5, True)))
    for name, merge_cfg in merges:
        s = SliceSettings(patch_size=patch, overlap_ratio=args.overlap,
                          batch_size=args.batch_size, score_thr=args.score_thr, merge=merge_cfg)
        rows.append((name, sliced_predict(predictor, image, s).detections))
    whole = predictor.predict([read_window(image, np.array([0, 0, width, height]))],
                              args.score_thr)[0]
    rows.append(('full image (letterboxed to input)', whole))
    print(f'quality vs {osp.basename(args.ann)} ({len(gt_boxes)} objects), one-to-one matches '
          f'at IoU >= 0.5, score > {args.score_thr}; "same label" needs the right class, '
          f'"any label" only the box:')
    print(f'  {"":36s} {"boxes":>5s} | same label: {"recall":>6s} {"precision":>9s} '
          f'{"dup/mislabel":>12s} {"background":>10s} | any label: {"recall":>6s} '
          f'{"precision":>9s}')
    for name, dets in rows:
        st = match_detections(dets, gt_boxes, gt_labels)
        anyl = match_detections(dets, gt_boxes, gt_labels, class_aware=False)
        print(f'  {name:36s} {len(dets):5d} | {st.recall:18.3f} {st.precision:9.3f} '
              f'{st.duplicates:12d} {st.background:10d} | {anyl.recall:17.3f} '
              f'{anyl.precision:9.3f}')


if __name__ == '__main__':
    main()

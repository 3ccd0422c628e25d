"""Census: every config file MMDetection and MMYOLO ship, through every capability, at a small
input with random weights.

    .venv/bin/python benchmarks/census.py [--packages mmdet mmyolo] [--match REGEX]
        [--shard I/N] [--jsonl out.jsonl] [--resume]
    .venv/bin/python benchmarks/census.py --small   # a quick check (the tests run it)

Per config file: read it; refuse it in one line where a tool would (``runtime.models``: no
model, a package or download it needs, a kind we do not support: these are the EXCLUSIONS,
each with its reason); else build the detector (random weights, no ``init_weights``: nothing is
downloaded; ``runtime.models.initialize_without_downloads``) and run, on one generated image at ``--size`` pixels (blank images packed and
preprocessed as a test pipeline would, ``core.dummy_forward``, plus noise so that boxes vary):

(a pipeline that resizes every image to one fixed size, as SSD's, sets the size instead when
larger; a model that fails because a level is smaller than a kernel runs again at twice, then
four times the size; a model that fails after it was built and explained runs once more with
BatchNorm statistics of random inputs, random weights being degenerate otherwise for some
deep models: both recorded in the row)

- feature maps: the probe of the default feature layer (``neck``, else ``backbone``),
- GradCAM, AblationCAM (1% of the channels) and D-RISE (4 masks) of the best box,
- the sliced predictor (``engine.slicing.BatchPredictor``) on two images of that size, its
  test pipeline's resize set to it.

Every ``score_thr`` of the model config is set to 0 (random weights score about 1 / classes),
and an RPN keeps 64 proposals instead of 1000 (the same code path, cheaper).

A config PASSES when every step gives its result (maps of the right shape, finite; boxes from
the sliced predictor need not exist: random weights). Results go to ``--jsonl`` one line per
config as they come (``--resume`` skips those already there), and a table per config family
(the first folder of the path) with the share passing, by config count, is printed at the end:
passing / (all - excluded).

``--small`` runs only ``SMALL_SET`` (into a temporary JSONL) and exits with 1 unless each of
those gets its expected status: that the census itself still runs, not a share.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import sys
import time
import traceback
import warnings
from collections import defaultdict

import numpy as np
import torch

STEPS = ('build', 'featmap', 'kind', 'gradcam', 'ablationcam', 'drise', 'sliced')
# --small: a dense MMDetection head, an MMYOLO head and a file with no model, with the status
# each gets.
SMALL_SET = {('mmdet', 'retinanet/retinanet_r18_fpn_1x_coco.py'): 'pass',
             ('mmyolo', 'yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py'): 'pass',
             ('mmdet', '_base_/default_runtime.py'): 'excluded'}


def config_files(package: str) -> list:
    module = __import__(package)
    root = osp.join(osp.dirname(module.__file__), '.mim', 'configs')
    return [(package, osp.relpath(p, root), p)
            for p in sorted(glob.glob(osp.join(root, '**', '*.py'), recursive=True))]


def small_pipeline(cfg, size: int) -> None:
    """Every ``scale``/``img_scale`` of the test pipeline set to ``size`` (keeps the steps)."""
    from mmyolo_vis_hooks.engine.core.pipeline import test_pipeline_cfg
    try:
        pipeline = test_pipeline_cfg(cfg)
    except ValueError:
        return
    for step in pipeline:
        for key in ('scale', 'img_scale'):
            if key in step:
                step[key] = (size, size)
        if 'width' in step and 'height' in step:
            step['width'] = step['height'] = size
    if (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline'):
        cfg.test_dataloader.dataset.pipeline = pipeline
    cfg.test_pipeline = pipeline


def network_input_size(cfg, size: int) -> int:
    """``size``, or the fixed input of a test pipeline that resizes every image to one size
    (``keep_ratio=False``: SSD300's extra layers need 300 px, 128 px leaves them 2 x 2 maps
    for 3 x 3 kernels) when larger."""
    from mmyolo_vis_hooks.engine.core.pipeline import test_pipeline_cfg, transform_type
    try:
        pipeline = test_pipeline_cfg(cfg)
    except ValueError:
        return size
    for step in pipeline:
        scale = step.get('scale')
        if transform_type(step) == 'Resize' and step.get('keep_ratio') is False and scale:
            scale = (scale, scale) if isinstance(scale, int) else scale
            return max(size, *(int(v) for v in scale))
    return size


def no_score_threshold(node) -> None:
    """Every ``score_thr`` (and SOLOv2's ``filter_thr``, the same threshold after its matrix
    NMS) of a model config set to 0: with random weights the scores of a softmax over 81
    classes, or of a sigmoid from the focal-loss bias prior (0.01), stay below the configs'
    0.05, and the census needs a box."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ('score_thr', 'filter_thr'):
                node[key] = 0.0
            else:
                no_score_threshold(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            no_score_threshold(value)


def fewer_proposals(cfg) -> None:
    """An RPN's test config keeps 64 proposals (from 1000) and its RoI head at most 50
    detections an image: the same code path, at a 16th of the RoI head's cost. (With every
    score threshold at 0, LVIS's Cascade Mask R-CNN otherwise pastes 300 detections' masks of
    all 1203 classes, three stages of them, per image: more than the machine's memory.)"""
    test_cfg = cfg.model.get('test_cfg') or {}
    if not isinstance(test_cfg, dict):
        return
    rpn, rcnn = test_cfg.get('rpn'), test_cfg.get('rcnn')
    if isinstance(rpn, dict):  # (QueryInst, with no RPN, needs all its proposals' pairs)
        rpn['nms_pre'], rpn['max_per_img'] = 256, 64
        if isinstance(rcnn, dict) and rcnn.get('max_per_img', 0) > 50:
            rcnn['max_per_img'] = 50


def calibrate_feature_batchnorm(model, size: int) -> None:
    """BatchNorm statistics of the backbone and neck refit on two batches of random inputs
    (``extract_feat`` in train mode; the heads' forwards may need labels, or, as a cascade's
    with no proposal for an image, fail), instead of the default mean 0 and variance 1."""
    gen = torch.Generator().manual_seed(0)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches
            module.train()  # also where norm_eval keeps them in eval mode
    with torch.no_grad():
        for _ in range(2):
            model.extract_feat(torch.rand(2, 3, size, size, generator=gen) * 2 - 1)
    model.eval()


def first_line(err: BaseException) -> str:
    text = ' '.join(str(err).split()) or type(err).__name__
    return f'{type(err).__name__}: {text}'[:300]


def run_config(path: str, size: int, calibrate: bool = False) -> dict:
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    from mmyolo_vis_hooks.engine.core.dummy_forward import dummy_batch, dummy_input_size
    from mmyolo_vis_hooks.engine.detectors import explainable_detector
    from mmyolo_vis_hooks.engine.featmap.capture import probe_feature_layers
    from mmyolo_vis_hooks.engine.slicing.predictor import BatchPredictor
    from mmyolo_vis_hooks.runtime.models import (build_detector,
                                                 initialize_without_downloads, load_config)
    times = {}
    step = 'build'
    try:
        start = time.perf_counter()
        cfg = load_config(path)
        no_score_threshold(cfg.model)  # random weights: scores near 1 / num_classes
        fewer_proposals(cfg)
        size = network_input_size(cfg, size)
        model = build_detector(cfg, device='cpu')
        # the constructors leave some parameters uninitialized (DETRs' level embeddings,
        # Sparse R-CNN's proposal boxes): the documented random init, as at a first epoch
        initialize_without_downloads(model)
        if calibrate:
            calibrate_feature_batchnorm(model, size)
        times['build'] = time.perf_counter() - start
        step = 'featmap'
        layer = 'neck' if getattr(model, 'with_neck', False) else 'backbone'
        start = time.perf_counter()
        probe_feature_layers(model, [layer], 'census', (size, size))
        times[step] = time.perf_counter() - start
        gen = torch.Generator().manual_seed(0)
        height, width = dummy_input_size(model, (size, size))  # DETRs picking queries: more
        data = dummy_batch(model, (height, width))
        inputs = data['inputs'] + torch.randn(data['inputs'].shape, generator=gen)
        metas = [dict(s.metainfo) for s in data['data_samples']]
        step = 'kind'
        explainable_detector(model)  # the kind's one-line refusal comes first
        for step, options in (('gradcam', {}),
                              ('ablationcam', dict(ratio_channels_to_ablate=0.01,
                                                   batch_size=64)),
                              ('drise', dict(num_masks=4, batch_size=4))):
            start = time.perf_counter()
            result = BoxCAM(model, step, score_thr=0.0, topk=1, **options)(inputs, metas)[0]
            maps = result.box_maps()
            if len(result) != 1 or maps.shape[-2:] != inputs.shape[-2:] or \
                    not torch.isfinite(maps).all():
                raise ValueError(f'{len(result)} boxes, maps {tuple(maps.shape)}')
            times[step] = time.perf_counter() - start
        step = 'sliced'
        start = time.perf_counter()
        small_pipeline(cfg, max(height, width))
        predictor = BatchPredictor(model, cfg)
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        predictor.predict([image, image[::-1]], score_thr=0.0)
        times[step] = time.perf_counter() - start
        return dict(status='pass', times=times)
    except Exception as err:  # noqa: BLE001 - the census records every failure
        if os.environ.get('CENSUS_DEBUG'):
            traceback.print_exc()
        return dict(status='fail', step=step, error=first_line(err), times=times)


# What a convolution says when the small input leaves a level smaller than its kernel.
TOO_SMALL = ('smaller than kernel', "Kernel size can't be greater than actual input size")


def run_at_a_size_that_fits(path: str, size: int) -> dict:
    """:func:`run_config` at ``size``, and again at twice, then four times the size while a
    convolution refuses a level smaller than its kernel (mmcv's deformable convolution checks
    the input before its padding: DDOD's on a 2 x 2 last level at 256 px); the row then says
    which size it ran at."""
    row = run_config(path, size)
    for factor in (2, 4):
        if row['status'] != 'fail' or not any(text in row['error'] for text in TOO_SMALL):
            break
        row = dict(run_config(path, factor * size), size=factor * size)
    if row['status'] == 'fail' and row['step'] not in ('build', 'kind'):
        # random weights can be degenerate: with BatchNorm's default statistics (mean 0,
        # variance 1) DetectoRS' recursive ResNet-101 gives features of 2e7 and its RPN no
        # proposal. Once more with the statistics of random inputs; the row says so.
        retry = run_config(path, row.get('size', size), calibrate=True)
        if retry['status'] == 'pass':
            row = dict(retry, size=row.get('size', size), calibrated_bn=True)
    return row


def classify(path: str):
    """``'<kind of refusal>: <the tools' one line>'`` for a config the tools refuse before
    building (``runtime.config_check``), or None."""
    from mmyolo_vis_hooks.runtime.config_check import classify_file
    try:
        refusal = classify_file(path)
    except FileNotFoundError as err:  # a _base_ file missing from the package itself
        return f'unreadable: {first_line(err)}'
    return None if refusal is None else f'{refusal.reason}: {refusal}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--packages', nargs='+', default=['mmdet', 'mmyolo'])
    parser.add_argument('--match', default=None, help='only config paths matching this regex')
    parser.add_argument('--shard', default='0/1', help='I/N: every N-th config from the I-th')
    parser.add_argument('--size', type=int, default=128, help='input side in pixels')
    parser.add_argument('--jsonl', default='census.jsonl', help='results, one line a config')
    parser.add_argument('--resume', action='store_true', help='skip configs already in --jsonl')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--shuffle', action='store_true',
                        help='a seeded random order (a partial run samples every family)')
    parser.add_argument('--small', action='store_true',
                        help='only a few configs with known results, checked (see SMALL_SET)')
    args = parser.parse_args()
    if args.small:
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            args.jsonl, args.resume, args.shard = osp.join(folder, 'census.jsonl'), False, '0/1'
            rows = census(args, lambda package, rel: (package, rel) in SMALL_SET)
        wrong = [f'{r["package"]}::{r["config"]}: {r["status"]} {r.get("error", "")}'
                 for r in rows if r['status'] != SMALL_SET[r['package'], r['config']]]
        if wrong or len(rows) != len(SMALL_SET):
            print(f'FAILED: {len(rows)} of {len(SMALL_SET)} configs found; unexpected: '
                  + '; '.join(wrong), file=sys.stderr)
            sys.exit(1)
        return
    census(args)


def census(args, keep=None) -> list:
    """Runs the census over the configs ``args`` selects (and ``keep(package, rel)``
    accepts), appending to ``args.jsonl``; prints the report and returns the rows."""
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    index, count = (int(v) for v in args.shard.split('/'))
    files = [f for package in args.packages for f in config_files(package)]
    if keep is not None:
        files = [f for f in files if keep(f[0], f[1])]
    if args.match:
        files = [f for f in files if re.search(args.match, f'{f[0]}::{f[1]}')]
    if args.shuffle:  # a partial run then samples every family
        files = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    files = files[index::count]
    done = {}
    if args.resume and osp.exists(args.jsonl):
        with open(args.jsonl) as f:
            for line in f:
                row = json.loads(line)
                done[(row['package'], row['config'])] = row
    with open(args.jsonl, 'a') as out:
        for n, (package, rel, path) in enumerate(files):
            if (package, rel) in done:
                continue
            start = time.perf_counter()
            refusal = classify(path)
            row = dict(status='excluded', reason=refusal) if refusal else \
                run_at_a_size_that_fits(path, args.size)
            row.update(package=package, config=rel, seconds=time.perf_counter() - start)
            done[(package, rel)] = row
            out.write(json.dumps(row) + '\n')
            out.flush()
            print(f'[{n + 1}/{len(files)}] {package}::{rel}: {row["status"]} '
                  f'{row.get("step", "")} {row.get("error", row.get("reason", ""))}'[:200],
                  flush=True)
    report(list(done.values()))
    return list(done.values())


def report(rows) -> None:
    families = defaultdict(lambda: defaultdict(int))
    reasons = defaultdict(int)
    failures = defaultdict(int)
    for row in rows:
        family = f'{row["package"]}::{row["config"].split(os.sep)[0]}'
        families[family][row['status']] += 1
        if row['status'] == 'excluded':
            reasons[row['reason'].split(':')[0]] += 1
        elif row['status'] == 'fail':
            failures[f'{row["step"]}: {row["error"][:90]}'] += 1
    print(f'\n{"family":<40} {"configs":>7} {"pass":>5} {"fail":>5} {"excluded":>8}')
    for family in sorted(families):
        c = families[family]
        print(f'{family:<40} {sum(c.values()):>7} {c["pass"]:>5} {c["fail"]:>5} '
              f'{c["excluded"]:>8}')
    total = defaultdict(int)
    for c in families.values():
        for key, value in c.items():
            total[key] += value
    considered = total['pass'] + total['fail']
    share = 100.0 * total['pass'] / considered if considered else float('nan')
    print(f'\n{sum(total.values())} config files: {total["pass"]} pass, {total["fail"]} fail, '
          f'{total["excluded"]} excluded; {share:.1f}% of the {considered} detection configs '
          f'considered pass')
    print('\nexclusions by reason:')
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f'{n:>5}  {reason}')
    print('\nfailures by step and error:')
    for failure, n in sorted(failures.items(), key=lambda kv: -kv[1])[:40]:
        print(f'{n:>5}  {failure}')
    sys.stdout.flush()


if __name__ == '__main__':
    main()

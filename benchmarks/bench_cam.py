"""Box CAM cost and agreement, ours vs grad-cam 1.5, measured side by side in one run.

    .venv/bin/python benchmarks/bench_cam.py [--checkpoint tests/assets/yolov5_n_shapes.pth]

Part 1, per-box maps: the demo YOLOv5-n (320 px, the trained checkpoint when given or found,
else random weights with BatchNorm statistics calibrated on random inputs), K=8 boxes, target
layers ``neck.out_layers[0..2]``, target of box k = its own class score at its prior. Ours: one
forward, then per-box gradients on the captured activations. grad-cam: its own method classes,
built once, called once per box (a forward and a backward each) on a wrapper whose output is
the same flat score tensor and whose target k picks the same (prior, class) entry. The wrapper
passes each neck output through a tap module that returns a fresh view, and grad-cam's target
layers are those taps: the gradient is then w.r.t. what the neck handed to the head, which is
what ours computes at ``neck.out_layers[i]`` (YOLOv5's out_layers are nn.Identity, whose output
tensor is also consumed by the neck's own bottom-up path).

Part 2, EigenCAM on one 80x80x128 map (the 80x80 neck output of YOLOv5-s at 640 px): our
projection (covariance eigh) vs grad-cam's EigenCAM class (full SVD), both from the same map to
a 640x640 normalised CAM. grad-cam keeps the arbitrary SVD sign; ours fixes it (largest
magnitude positive). Reported: the correlation of the final maps and the sign-free |correlation|
of the raw projections.

Part 3, per-box maps on MMDetection detectors (``--kinds``; Faster R-CNN ResNet-50 FPN and
Deformable DETR ResNet-50 by default, the latter on its default layers (the neck's outputs) and
on its encoder's output tokens (``+encoder``: one map per level, grad-cam's taps on the same
levels), random weights, ``--size`` px, K boxes): ours vs
grad-cam's per-box loop in the style its documentation gives for Faster R-CNN. grad-cam's model
is the detector's own ``predict`` returning ``{'boxes', 'labels', 'scores'}`` per image (its
features through taps, as above), and the target of box k matches the output box of the same
class with the highest IoU, as ``FasterRCNNBoxScoreTarget`` does. The equality claim compares
like with like: the matched box's score (``ScoreOfMatchedBox``). grad-cam's own
``FasterRCNNBoxScoreTarget`` adds that box's IoU to its score, i.e. it also explains the box
regression; its mean correlation with ours is printed for information, not checked (over the
boxes where it has a gradient: it falls to a constant when the output box of highest IoU has
another class, as a DETR's duplicated query boxes do). Two-stage
proposals: grad-cam's model recomputes them on every call, ours holds those of the image fixed;
on the same image they are the same boxes, and mmcv's RoIAlign gives no gradient to the RoI
coordinates, so both explain the same quantity.

Times are medians of ``--repeats`` interleaved runs after one untimed warm-up of each side, as
wall and as CPU (process) seconds; absolute wall numbers include the load of other processes on
this machine, the ratios are measured under the same load.
"""
import argparse
import contextlib
import os.path as osp
import statistics
import sys
import time
import warnings
from typing import Optional

import numpy as np
import torch
from torch import nn

from mmyolo_vis_hooks.testing.cam_reference import (BoxScoreTarget, FeatureTap, FlatScoresModel,
                                                   calibrate_batchnorm, correlation,
                                                   demo_input, tokens_through_taps)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py')
DEMO_CHECKPOINT = osp.join(REPO, 'tests', 'assets', 'yolov5_n_shapes.pth')
GRADIENT_METHODS = ('gradcam', 'gradcam++', 'xgradcam', 'layercam', 'eigengradcam')
# What the docs claim for equal maps; the run exits with 1 when a comparison falls below.
MIN_CORRELATION = 0.999


class Clock:
    """Wall and CPU (process) seconds of one call. CPU time counts only this process's work,
    so it is less disturbed by other processes on the machine than wall time."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def run(self, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*args)
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return result

    def medians(self):
        return statistics.median(self.wall), statistics.median(self.cpu)


def bench_box_maps(args) -> list:
    import pytorch_grad_cam as gc
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    from mmyolo_vis_hooks.runtime.models import build_detector

    checkpoint = args.checkpoint or (DEMO_CHECKPOINT if osp.isfile(DEMO_CHECKPOINT) else None)
    model = build_detector(DEMO_CONFIG, checkpoint)
    if checkpoint is None:
        calibrate_batchnorm(model, (2, 3, 320, 320))
    inputs = demo_input(model, 320)
    grad_cam_classes = dict(gradcam=gc.GradCAM, xgradcam=gc.XGradCAM, layercam=gc.LayerCAM,
                            eigengradcam=gc.EigenGradCAM)
    grad_cam_classes['gradcam++'] = gc.GradCAMPlusPlus
    wrapper = FlatScoresModel(model)
    failures = []
    print(f'Part 1: per-box maps, YOLOv5-n demo config at 320 px, '
          f'{"checkpoint " + osp.relpath(checkpoint, REPO) if checkpoint else "random weights"}, '
          f'K={args.k} boxes, layers neck.out_layers[0..2], {args.repeats} repeats')
    print(f'{"method":<14}{"ours wall/cpu (s)":>19}{"grad-cam wall/cpu (s)":>23}'
          f'{"speed-up wall/cpu":>19}{"corr min":>10}{"corr mean":>11}')
    for method in GRADIENT_METHODS:
        # grad-cam's target is the box's score: ours with target='log_score' takes its
        # gradient (the default 'logit' differentiates the logits, another quantity)
        ours = BoxCAM(model, method, score_thr=args.score_thr, topk=args.k, target='log_score')
        theirs = grad_cam_classes[method](wrapper, [tap for tap in wrapper.taps])

        def run_ours():
            result = ours(inputs)[0]
            return result, result.box_maps().numpy()

        def run_theirs(dets):
            return np.concatenate([
                theirs(inputs, targets=[BoxScoreTarget(int(p), int(c))])
                for p, c in zip(dets.priors, dets.labels)])

        if not args.small:
            run_theirs(run_ours()[0].detections)  # warm-up, untimed
        ours_clock, theirs_clock = Clock(), Clock()
        for _ in range(args.repeats):  # interleaved: ours, theirs, ours, theirs ...
            result, our_maps = ours_clock.run(run_ours)
            their_maps = theirs_clock.run(run_theirs, result.detections)
        theirs.activations_and_grads.release()
        model.zero_grad(set_to_none=True)  # grad-cam's backward filled parameter .grad
        if len(result) != args.k:
            warnings.warn(f'only {len(result)} boxes above score_thr={args.score_thr}')
        corrs = [correlation(a, b) for a, b in zip(our_maps, their_maps)]
        (ow, oc), (tw, tc) = ours_clock.medians(), theirs_clock.medians()
        speed_up = f'{tw / ow:.1f}x/{tc / oc:.1f}x'
        print(f'{method:<14}{f"{ow:.3f}/{oc:.3f}":>19}{f"{tw:.3f}/{tc:.3f}":>23}{speed_up:>19}'
              f'{min(corrs):>10.5f}{statistics.mean(corrs):>11.5f}')
        if not min(corrs) >= MIN_CORRELATION:
            failures.append(f'{method}: maps correlate at {min(corrs):.5f} (min) with '
                            f'grad-cam\'s, claimed >= {MIN_CORRELATION}')
    model.train(False)
    return failures


# Part 3's detectors: config, overrides that keep the CPU time small without changing the code
# path, and the score threshold that lets random weights give K boxes.
MMDET_KINDS = {
    'faster_rcnn': ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                    {'model.test_cfg.rpn.nms_pre': 512, 'model.test_cfg.rpn.max_per_img': 128,
                     'model.test_cfg.rcnn.score_thr': 0.0}),
    'deformable_detr': ('mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py', {}),
    'dino': ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', {'model.num_queries': 100}),
}
# Target layers of part 3 (default: each kind's default layers, the neck's outputs).
# ``+encoder``: a DETR's encoder output tokens, one map per level, what its decoder reads
# (grad-cam's taps then sit on those levels: ``tokens_through_taps``).
LAYER_CHOICES = {'encoder': ['encoder']}


class PredictModel(nn.Module):
    """grad-cam's model in its torchvision Faster R-CNN style: the detector's own ``predict``,
    one ``{'boxes', 'labels', 'scores'}`` dict per image, with a tap on each feature level."""

    def __init__(self, detector: nn.Module, metas, token_layer: Optional[str] = None) -> None:
        from mmyolo_vis_hooks.engine.core.layers import resolve_layer
        from mmyolo_vis_hooks.engine.detectors import explainable_detector
        from mmyolo_vis_hooks.engine.detectors.base import samples_of
        super().__init__()
        self.detector, self.metas, self.samples_of = detector, metas, samples_of
        self.token_layer = None if token_layer is None else resolve_layer(detector, token_layer)
        self.token_grids = explainable_detector(detector).token_grids
        with torch.no_grad():
            feats = detector.extract_feat(torch.zeros(1, 3, 64, 64))
        levels = len(feats) if token_layer is None else len(self.token_grids(feats))
        self.taps = nn.ModuleList(FeatureTap() for _ in range(levels))
        self._grids = ()

    def forward(self, x):
        detector = self.detector
        extract_feat = detector.extract_feat
        if self.token_layer is None:
            detector.extract_feat = lambda inputs: tuple(
                tap(f) for tap, f in zip(self.taps, extract_feat(inputs)))
            routing = contextlib.nullcontext()
        else:  # the taps are on the token layer's levels; their grid comes from the features
            def features(inputs):
                feats = extract_feat(inputs)
                self._grids = self.token_grids(feats)
                return feats
            detector.extract_feat = features
            routing = tokens_through_taps(self.token_layer, self.taps, lambda: self._grids)
        try:
            with routing:
                samples = detector.predict(x, self.samples_of(self.metas), rescale=False)
        finally:
            del detector.extract_feat  # the instance attribute; the method shows again
        return [dict(boxes=s.pred_instances.bboxes, labels=s.pred_instances.labels,
                     scores=s.pred_instances.scores) for s in samples]

    def used_taps(self, inputs: torch.Tensor) -> list:
        """The taps whose features the scores depend on. A two-stage detector's RPN-only level
        (FPN's P6) reaches the scores only through the proposals, which carry no gradient:
        grad-cam cannot take such a layer, and ours drops it."""
        outputs = []
        hooks = [tap.register_forward_hook(lambda _m, _i, out: outputs.append(out))
                 for tap in self.taps]
        try:
            scores = torch.cat([out['scores'] for out in self(inputs)])
        finally:
            for hook in hooks:
                hook.remove()
        grads = torch.autograd.grad(scores.sum(), outputs, allow_unused=True)
        return [tap for tap, grad in zip(self.taps, grads) if grad is not None]


class ScoreOfMatchedBox:
    """grad-cam target in ``FasterRCNNBoxScoreTarget``'s style, one box: the score of the
    output box of the same class with the highest IoU (0 below ``iou_thr``), without adding
    the IoU (our target is the box's class score alone)."""

    def __init__(self, label: int, box: torch.Tensor, iou_thr: float = 0.5) -> None:
        self.label, self.box, self.iou_thr = label, box[None], iou_thr

    def __call__(self, output):
        from torchvision.ops import box_iou
        same_class = output['labels'] == self.label
        if not same_class.any():
            return output['scores'].sum() * 0
        ious = box_iou(self.box, output['boxes'])[0].masked_fill(~same_class, -1)
        best = ious.argmax()
        return output['scores'][best] * (ious[best] > self.iou_thr)


def bench_mmdet_kinds(args) -> list:
    import pytorch_grad_cam as gc
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    from mmyolo_vis_hooks.engine.detectors.base import default_metas
    from mmyolo_vis_hooks.runtime.models import build_detector, initialize_without_downloads

    failures = []
    print(f'\nPart 3: per-box GradCAM on MMDetection detectors, random weights, '
          f'{args.size} px, K={args.k} boxes, {args.repeats} repeats; grad-cam: one forward and '
          f'backward of predict per box')
    print(f'{"detector[+layers]":<24}{"ours wall/cpu (s)":>19}{"grad-cam wall/cpu (s)":>23}'
          f'{"speed-up wall/cpu":>19}{"corr min":>10}{"corr mean":>11}{"vs IoU+score":>14}')
    for name in args.kinds.split(','):
        kind, _, layers = name.partition('+')
        config, options = MMDET_KINDS[kind]
        torch.manual_seed(0)
        model = build_detector(config, device='cpu', cfg_options=options)
        initialize_without_downloads(model)
        calibrate_batchnorm(model, (2, 3, args.size, args.size))
        inputs = demo_input(model, args.size)
        target_layers = LAYER_CHOICES[layers] if layers else None
        wrapper = PredictModel(model, default_metas(1, args.size, args.size),
                               token_layer=target_layers[0] if target_layers else None)
        ours = BoxCAM(model, 'gradcam', target_layers, score_thr=0.0, topk=args.k,
                      target='log_score')
        theirs = gc.GradCAM(wrapper, wrapper.used_taps(inputs))

        def run_ours():
            result = ours(inputs)[0]
            return result, result.box_maps().numpy()

        def run_theirs(dets, target=ScoreOfMatchedBox):
            return np.concatenate([
                theirs(inputs, targets=[target(int(label), box)])
                for label, box in zip(dets.labels, dets.boxes)])

        if not args.small:
            run_theirs(run_ours()[0].detections)  # warm-up, untimed
        ours_clock, theirs_clock = Clock(), Clock()
        for _ in range(args.repeats):  # interleaved
            result, our_maps = ours_clock.run(run_ours)
            their_maps = theirs_clock.run(run_theirs, result.detections)
        iou_and_score = []
        for label, box in zip(result.detections.labels, result.detections.boxes):
            try:
                iou_and_score.append(theirs(inputs, targets=[FasterRCNNBoxScoreTarget(
                    [int(label)], box[None].numpy())])[0])
            except RuntimeError:
                # its target is a constant when the output box of highest IoU has another
                # class (a DETR lists one query's box once per class): no gradient at all
                iou_and_score.append(None)
        theirs.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
        model.train(False)
        if len(result) != args.k:
            failures.append(f'{name}: {len(result)} boxes, asked for {args.k}')
        corrs = [correlation(a, b) for a, b in zip(our_maps, their_maps)]
        informative = [correlation(a, b) for a, b in zip(our_maps, iou_and_score)
                       if b is not None] or [float('nan')]
        (ow, oc), (tw, tc) = ours_clock.medians(), theirs_clock.medians()
        speed_up = f'{tw / ow:.1f}x/{tc / oc:.1f}x'
        print(f'{name:<24}{f"{ow:.3f}/{oc:.3f}":>19}{f"{tw:.3f}/{tc:.3f}":>23}{speed_up:>19}'
              f'{min(corrs):>10.5f}{statistics.mean(corrs):>11.5f}'
              f'{statistics.mean(informative):>14.3f}')
        if not min(corrs) >= MIN_CORRELATION:
            failures.append(f'{name}: maps correlate at {min(corrs):.5f} (min) with '
                            f'grad-cam\'s, claimed >= {MIN_CORRELATION}')
    return failures


def bench_eigencam(args) -> None:
    from pytorch_grad_cam import EigenCAM as GradCamEigenCAM
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
    from mmyolo_vis_hooks.engine.cam.compose import compose_box_maps
    from mmyolo_vis_hooks.engine.cam.methods import EigenCAM, LayerContext
    from mmyolo_vis_hooks.engine.cam.projection import first_component_projection
    from mmyolo_vis_hooks.runtime.models import build_detector

    import mmyolo
    detector = build_detector(osp.join(osp.dirname(mmyolo.__file__), '.mim', 'configs', 'yolov5',
                                       'yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py'))
    calibrate_batchnorm(detector, (1, 3, 640, 640), batches=1)
    with torch.no_grad():
        featmap = detector.extract_feat(demo_input(detector, 640))[0]  # 1 x 128 x 80 x 80
    size = (640, 640)

    class StoredMap(nn.Module):
        """grad-cam's model: returns the stored map through a target layer."""

        def __init__(self):
            super().__init__()
            self.layer = nn.Identity()
            self.dummy = nn.Parameter(torch.zeros(1))  # grad-cam reads the device from here

        def forward(self, x):
            return self.layer(featmap.clone())

    stored = StoredMap()
    theirs = GradCamEigenCAM(stored, [stored.layer])
    dummy_input = torch.zeros(1, 3, *size)
    method = EigenCAM()
    box_mask = torch.zeros((1, *featmap.shape[-2:]), dtype=torch.bool)

    def run_ours():
        raw = method.layer_map(LayerContext(activation=featmap[0], grads=None, box_mask=box_mask))
        return compose_box_maps([raw], input_size=size)[0].numpy()

    run_ours(), theirs(dummy_input, targets=None)  # warm-up (lazy LAPACK / allocator set-up)
    ours_clock, theirs_clock = Clock(), Clock()
    for _ in range(args.repeats):  # interleaved
        ours = ours_clock.run(run_ours)
        their_map = theirs_clock.run(theirs, dummy_input, None)[0]
    theirs.activations_and_grads.release()
    our_projection = first_component_projection(featmap)[0].numpy()
    their_projection = get_2d_projection(featmap.numpy())[0]
    sign_agrees = correlation(our_projection, their_projection) > 0
    (ow, oc), (tw, tc) = ours_clock.medians(), theirs_clock.medians()
    print(f'\nPart 2: EigenCAM on a {featmap.shape[2]}x{featmap.shape[3]}x{featmap.shape[1]} '
          f'map (YOLOv5-s neck level 0 at 640 px), output {size[0]}x{size[1]}, '
          f'{args.repeats} repeats')
    print(f'ours {ow:.4f} s wall / {oc:.4f} s CPU, grad-cam EigenCAM {tw:.4f} s wall / '
          f'{tc:.4f} s CPU, speed-up {tw / ow:.1f}x wall / {tc / oc:.1f}x CPU')
    print(f'|corr| of raw projections {abs(correlation(our_projection, their_projection)):.5f}; '
          f'SVD sign of grad-cam {"agrees" if sign_agrees else "is flipped"}; corr of final '
          f'maps {correlation(ours, their_map):.5f}'
          + ('' if sign_agrees else
             f' (vs grad-cam with the sign of ours: '
             f'{correlation(ours, _final_map(-their_projection, size)):.5f})'))


def _final_map(projection: np.ndarray, size) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image
    cam = np.maximum(projection, 0)[None]
    return scale_cam_image(scale_cam_image(cam, size))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', default=None,
                        help='demo checkpoint (default: tests/assets/yolov5_n_shapes.pth if '
                        'present, else random weights)')
    parser.add_argument('--k', type=int, default=8, help='boxes per image')
    parser.add_argument('--score-thr', type=float, default=0.01, help='box score threshold')
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per side')
    parser.add_argument('--skip-boxes', action='store_true', help='skip part 1')
    parser.add_argument('--skip-eigen', action='store_true', help='skip part 2')
    parser.add_argument('--kinds', default='faster_rcnn,deformable_detr,deformable_detr+encoder',
                        help=f'part 3 detectors, comma-separated, of {", ".join(MMDET_KINDS)}, '
                        f'each with its default layers or with +{"/+".join(LAYER_CHOICES)} '
                        '(a DETR\'s encoder tokens); empty skips part 3')
    parser.add_argument('--size', type=int, default=320, help='part 3 input size (px)')
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs and agrees (K=2, 1 repeat and no warm-up, '
                        '160 px, parts 1 and 3 with Faster R-CNN, 1 torch thread)')
    args = parser.parse_args()
    if args.small:
        args.k, args.repeats, args.skip_eigen, args.size = 2, 1, True, 160
        args.kinds = 'faster_rcnn'
        torch.set_num_threads(1)  # a check, not a timing: the least CPU, steady under load
    torch.manual_seed(0)
    warnings.filterwarnings('ignore', category=UserWarning)
    failures = [] if args.skip_boxes else bench_box_maps(args)
    if args.kinds:
        failures += bench_mmdet_kinds(args)
    if not args.skip_eigen:
        bench_eigencam(args)
    if failures:
        print('FAILED: ' + '; '.join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

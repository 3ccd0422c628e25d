"""Small MMDetection 3.x detectors from MMDetection's packaged configs with random weights
(nothing can be downloaded here: ``Pretrained`` ``init_cfg`` entries are dropped), for the CPU.

Random models (``random_mmdet_model``): one config per code path of each kind the detector
contract supports, BN statistics refitted on random inputs (a random network whose scores
vary), cached per session; with the checks every kind shares (selection equals predict,
GradCAM equals grad-cam, every method leaves the model alone).

Kinds in a Runner (``small_kind_cfg``, ``runner_cfg``): a dense one-stage detector (RetinaNet),
a two-stage one (Faster R-CNN, and Mask R-CNN for instance masks) and a DETR-like one (DINO),
each shrunk for the CPU: a ResNet-18
backbone, narrow necks and heads, fewer queries and transformer layers, the test pipeline's
``Resize(keep_ratio=True)`` at ``SCALE`` instead of (1333, 800); trained and validated on
images whose content proves alignment.

The alignment images carry, per channel, a trapezoid wave (0-plateau, ramp, 255-plateau, ramp;
period 64 px): red along x, green along y, blue 0. Between the wave's kinks the content is
affine, which bilinear resizing (OpenCV's) and bilinear sampling reproduce exactly, up to
uint8 rounding; the ramps rise by 10.6 grey levels per pixel, so a map half an input pixel
off misses by 4 or more levels. Both images start and end in a plateau along each axis, so
their borders are exact too, and have different aspects: batched together, one is padded at
the bottom, the other at the right.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from mmyolo_vis_hooks.runtime.models import build_detector, initialize_without_downloads
from mmyolo_vis_hooks.testing.cam_reference import calibrate_batchnorm

from . import mmdet_config
from .runner import replace_key

# ------------------------------------------------------------------------- random models
# One config per code path of the MMDetection dense kind: anchors with sigmoid classes, points
# with a centerness factor (FCOS, ATSS), softmax classes with a background column (SSD-lite),
# MMDetection's own RTMDet (a namesake of MMYOLO's head), and V3Det's FCOS (FocalCustomLoss's
# activation; 50 of its 13204 classes in the tests).
DENSE = {
    'retinanet': 'retinanet/retinanet_r18_fpn_1x_coco.py',
    'fcos': 'fcos/fcos_r18_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py',
    'atss': 'atss/atss_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'ssdlite': 'ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
    'rtmdet': 'rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
    'v3det_fcos': 'v3det/fcos_r50_fpn_8x4_sample1e-3_mstrain_v3det_2x.py',
}
# Dense heads with a decoding of their own, one config per code path: GFL's distance
# distributions, TOOD's geometric-mean scores and decoded boxes, PAA's geometric mean with
# score voting, FoveaBox's and RepPoints' own box decoding, and MMDetection's YOLO heads with
# objectness and a selection over all levels (YOLOv3's anchors, YOLOX's points), and SABL
# RetinaNet's bucketing boxes with a localization confidence as score factor, and an RPN alone
# (one class, NMS within each level). ResNet-50s swapped for ResNet-18s.
CUSTOM_DENSE = {
    'gfl': 'gfl/gfl_r50_fpn_1x_coco.py',
    'tood': 'tood/tood_r50_fpn_1x_coco.py',
    'paa': 'paa/paa_r50_fpn_1x_coco.py',
    'fovea': 'foveabox/fovea_r50_fpn_4xb4-1x_coco.py',
    'reppoints': 'reppoints/reppoints-moment_r50_fpn-gn_head-gn_1x_coco.py',
    'yolov3': 'yolo/yolov3_mobilenetv2_8xb24-320-300e_coco.py',
    'yolox': 'yolox/yolox_tiny_8xb8-300e_coco.py',
    'sabl_retinanet': 'sabl/sabl-retinanet_r50_fpn_1x_coco.py',
    'rpn': 'rpn/rpn_r50_fpn_1x_coco.py',
}
# Two-stage: a standard RoI head, a cascade (mean of the stages' logits), Mask R-CNN's box
# branch, Grid R-CNN (no box regression; a grid head moves the boxes kept by the NMS), and
# the cascades whose box branch fuses image-level features into every RoI (HTC's semantic
# feature; SCNet's, plus its global context), and SABL's bucketing box heads (a box and a
# localization confidence per RoI) in a standard and a cascade RoI head, and TridentNet (a C4
# Faster R-CNN whose weight-sharing branches run one at test time; its TridentResNet has no
# ResNet-18), and the Seesaw loss's scores (its own activation, an objectness pair) in a
# Mask R-CNN (its Cascade Mask R-CNN's predict with 300 detections of 1203 classes' masks
# takes too much memory for the test machines), and V3Det's CrossEntropyCustomLoss (a sigmoid
# per class; 50 classes instead of 13204) in a cascade.
TWO_STAGE = {
    'faster_rcnn': 'faster_rcnn/faster-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'cascade_rcnn': 'cascade_rcnn/cascade-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'mask_rcnn': 'mask_rcnn/mask-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'cascade_mask_rcnn': 'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    'grid_rcnn': 'grid_rcnn/grid-rcnn_r50_fpn_gn-head_2x_coco.py',
    'htc': 'htc/htc_r50_fpn_1x_coco.py',
    'scnet': 'scnet/scnet_r50_fpn_1x_coco.py',
    'sabl_faster_rcnn': 'sabl/sabl-faster-rcnn_r50_fpn_1x_coco.py',
    'sabl_cascade_rcnn': 'sabl/sabl-cascade-rcnn_r50_fpn_1x_coco.py',
    'tridentnet': 'tridentnet/tridentnet_r50-caffe_1x_coco.py',
    'seesaw_mask_rcnn': 'seesaw_loss/mask-rcnn_r50_fpn_seesaw-loss_random-ms-2x_lvis-v1.py',
    'v3det_cascade_rcnn': 'v3det/cascade_rcnn_r50_fpn_8x4_sample1e-3_mstrain_v3det_2x.py',
}
# Sparse R-CNN's learned proposals refined by the stages of a SparseRoIHead, and QueryInst's
# masks from the last stage; ResNet-50 swapped for a ResNet-18.
SPARSE_RCNN = {
    'sparse_rcnn': 'sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py',
    'queryinst': 'queryinst/queryinst_r50_fpn_1x_coco.py',
}
# DETR family: softmax classes (DETR), sigmoid classes with learned queries (Deformable DETR)
# and queries chosen from the encoder's proposals (DINO), and DDQ-DETR's distinct queries (NMS
# before and inside the decoder); ResNet-50 swapped for a ResNet-18.
DETR = {
    'detr': 'detr/detr_r18_8xb2-500e_coco.py',
    'deformable_detr': 'deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
    'dino': 'dino/dino-4scale_r50_8xb2-12e_coco.py',
    'ddq_detr': 'ddq/ddq-detr-4scale_r50_8xb2-12e_coco.py',
}
# MMDetection's own instance-segmentation dense heads (engine/detectors/mmdet_instance.py,
# condinst.py: FCOS boxes with a dynamic mask head, CondInst's and BoxInst's configs).
INSTANCE = {
    'mmdet_rtmdet_ins': 'rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py',
    'yolact': 'yolact/yolact_r50_1xb8-55e_coco.py',
    'condinst': 'condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py',
    'boxinst': 'boxinst/boxinst_r50_fpn_ms-90k_coco.py',
    'solo': 'solo/solo_r18_fpn_8xb8-lsj-200e_coco.py',
    'solov2': 'solov2/solov2-light_r18_fpn_ms-3x_coco.py',
}
# Query-based mask segmentors with instance results: Mask2Former on COCO instances, and its
# panoptic model (133 classes, 80 of them things) with instance_on; ResNet-50 swapped for a
# ResNet-18, 50 queries.
MASKFORMER = {
    'mask2former': 'mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    'mask2former_panoptic': 'mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
}
R18_CHANNELS = {'deformable_detr': [128, 256, 512], 'dino': [128, 256, 512],
                'ddq_detr': [128, 256, 512],
                **{name: [64, 128, 256, 512] for name in ('cascade_mask_rcnn', 'grid_rcnn',
                                                          'htc', 'scnet', 'sabl_faster_rcnn',
                                                          'sabl_cascade_rcnn', 'seesaw_mask_rcnn',
                                                          'v3det_cascade_rcnn',
                                                          'sparse_rcnn', 'queryinst',
                                                          'gfl', 'tood', 'paa', 'fovea',
                                                          'reppoints', 'yolact',
                                                          'condinst', 'boxinst',
                                                          'sabl_retinanet', 'rpn', 'v3det_fcos')}}
# CenterNet: a class heatmap (objects as points); its test pipeline pastes the image into a
# canvas (``border`` in the metainfo), so it has tests of its own.
CENTERNET = {'centernet': 'centernet/centernet_r18_8xb16-crop512-140e_coco.py'}
CONFIGS = dict(DENSE, **CUSTOM_DENSE, **CENTERNET, **TWO_STAGE, **SPARSE_RCNN, **DETR, **INSTANCE,
               **MASKFORMER)
INPUT = (2, 3, 128, 160)
_MODELS = {}


def random_mmdet_model(name: str) -> nn.Module:
    """A random-init model of ``CONFIGS[name]`` (cached; tests must leave it as they found
    it)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        options = {}
        if name in TWO_STAGE:  # 1000 proposals make the RoI head's FC layers 13 GFLOPs
            options = {'model.test_cfg.rpn.nms_pre': 256, 'model.test_cfg.rpn.max_per_img': 64}
        if name in R18_CHANNELS:
            options.update({'model.backbone.depth': 18, 'model.backbone.init_cfg': None,
                            'model.neck.in_channels': R18_CHANNELS[name]})
        if name == 'v3det_fcos':
            options.update({'model.bbox_head.num_classes': 50,
                            'model.bbox_head.loss_cls.num_classes': 50})
        if name == 'v3det_cascade_rcnn':  # 50 of its 13204 classes: the same code path,
            # without a multiclass NMS over 845k (RoI, class) pairs
            for stage in range(3):
                options[f'model.roi_head.bbox_head.{stage}.num_classes'] = 50
                options[f'model.roi_head.bbox_head.{stage}.loss_cls.num_classes'] = 50
        if name in MASKFORMER:  # its pixel decoder reads the backbone's four levels
            options.update({'model.backbone.depth': 18, 'model.backbone.init_cfg': None,
                            'model.panoptic_head.in_channels': [64, 128, 256, 512],
                            'model.panoptic_head.num_queries': 50})
        if name in ('dino', 'ddq_detr'):  # 900 queries; 100 keep the code path and the CPU
            # time small
            options['model.num_queries'] = 100
        model = build_detector(mmdet_config(CONFIGS[name]), device='cpu', cfg_options=options)
        if name == 'tridentnet':
            # TridentConv creates its weight uninitialized (torch.Tensor(...)) and no init
            # reaches it (it is no Conv2d): whatever memory held, features of 1e37 and no
            # proposal depending on the tests before. ResNet's own conv init instead.
            from mmengine.model import kaiming_init
            for module in model.modules():
                if type(module).__name__ == 'TridentConv':
                    kaiming_init(module, mode='fan_out', nonlinearity='relu',
                                 distribution='normal')
        if name in DETR or name in SPARSE_RCNN or name in MASKFORMER:
            # uninitialized parameters otherwise (Sparse R-CNN's proposals: whole-image boxes);
            # the other kinds keep the constructors' init (scores above 0.05)
            initialize_without_downloads(model)
        if name == 'ddq_detr':
            # The decoder's box branches start at zero: its boxes never move and its NMS
            # between layers never suppresses a query. Random deltas that grow the boxes make
            # the queries overlap (about a third stay distinct).
            with torch.no_grad():
                for branch in model.bbox_head.reg_branches[:-1]:  # the last: the encoder's
                    branch[-1].weight.normal_(0, 0.05)
                    branch[-1].bias[2:] = 1.5
        if name in SPARSE_RCNN:
            # Random box deltas compound over the 6 stages into boxes far outside the image,
            # inverted ones too (QueryInst cannot paste a mask into those): smaller deltas.
            with torch.no_grad():
                for head in model.roi_head.bbox_head:
                    head.fc_reg.weight.mul_(0.05)
        calibrate_batchnorm(model, INPUT)
        if name == 'mmdet_rtmdet_ins':
            # As MMYOLO's RTMDet-ins (helpers.mmyolo_models): its random classifier saturates (top
            # scores exactly 1.0 in float32, zero score gradients, arbitrary order of ties).
            with torch.no_grad():
                for conv in model.bbox_head.rtm_cls:
                    conv.weight.mul_(0.05)
        if name in ('solo', 'solov2'):
            # Every cell of its random classifier scores about 0.5 (160k (cell, class) pairs
            # above score_thr, a mask each); lower logits leave a few hundred.
            with torch.no_grad():
                model.mask_head.conv_cls.bias.sub_(3.4)
        _MODELS[name] = model
    return _MODELS[name]


# ------------------------------------------------------------------ checks every kind shares
# The images fill part of the input (bottom/right padding) and were resized: the detectors
# clip boxes to img_shape and rescale them to the original image.
METAS = [dict(img_shape=(120, 150), ori_shape=(240, 250), scale_factor=(0.6, 0.5),
              batch_input_shape=INPUT[2:], pad_shape=INPUT[2:])] * INPUT[0]


def random_inputs(seed: int = 1) -> torch.Tensor:
    return torch.rand(INPUT, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_gradcam_equals_grad_cam(model: nn.Module, inputs: torch.Tensor, levels=None,
                                   topk: int = 3, score_thr: float = 0.0,
                                   token_layer=None) -> None:
    """Per box, our GradCAM (target ``log_score``: the gradient of the score) equals
    grad-cam's ``GradCAM`` on the flat candidate scores with a target selecting the box's
    (candidate, class), on the taps of feature ``levels`` (all when None), or of the levels
    of ``token_layer``'s tokens (ours then explains that layer)."""
    import numpy as np
    import pytorch_grad_cam as gc
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    from mmyolo_vis_hooks.testing.cam_reference import BoxScoreTarget, FlatScoresModel
    wrapper = FlatScoresModel(model, token_layer)
    try:
        result = BoxCAM(model, 'gradcam', None if token_layer is None else [token_layer],
                        score_thr=score_thr, topk=topk, target='log_score')(inputs)[0]
        assert len(result) == topk
        reference = gc.GradCAM(wrapper, list(wrapper.taps)[:levels])
        for k, (candidate, label) in enumerate(zip(result.detections.priors,
                                                   result.detections.labels)):
            theirs = reference(inputs, targets=[BoxScoreTarget(int(candidate), int(label))])[0]
            ours = result.box_maps()[k].numpy()
            if not ours.any():  # a 1x1 level: its map is one value, zero for both
                assert not theirs.any() and result.reasons[k], k
                continue
            corr = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
            assert corr > 0.999, (k, corr)
        reference.activations_and_grads.release()
    finally:
        model.zero_grad(set_to_none=True)  # grad-cam's backward filled parameter .grad
        model.eval()


def assert_methods_leave_the_model_alone(model: nn.Module, inputs: torch.Tensor,
                                         methods, ratio_channels_to_ablate: float,
                                         num_masks: int, reliable: bool = False,
                                         score_thr: float = 0.0, metas=None,
                                         target_layers=None) -> None:
    """Each method explains 2 boxes with finite maps of the input's size (with ``reliable``,
    at least one of them more than float noise), and the model's weights, buffers, modes and
    ``.grad`` are as before. ``metas`` default to :data:`METAS` (for inputs of
    :data:`INPUT`'s size); ``target_layers`` to the detector's defaults."""
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    model.train()  # a state to restore
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    try:
        for method in methods:
            options = dict(num_masks=num_masks, batch_size=16) if method == 'drise' else {}
            if method == 'ablationcam':
                options = dict(batch_size=64, ratio_channels_to_ablate=ratio_channels_to_ablate)
            result = BoxCAM(model, method, target_layers, score_thr=score_thr, topk=2,
                            **options)(
                inputs, metas or METAS[:1])[0]
            assert len(result) == 2, method
            maps = result.box_maps()
            assert maps.shape == (2, *inputs.shape[2:]) and torch.isfinite(maps).all(), method
            assert result.reliable.any() or not reliable, (method, result.reasons)
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def assert_masks_equal_predict(model: nn.Module, detector, inputs: torch.Tensor) -> None:
    """Instance segmentation: the detections chosen from the candidates, with their masks on
    the network input, = ``model.predict(..., rescale=False)`` (same labels, scores, boxes
    and masks, bit for bit but for a rare pixel at the mask threshold: the masks are the
    model's own ``img_shape`` pastes, padded)."""
    from mmyolo_vis_hooks.engine.detectors.base import samples_of
    with torch.no_grad():
        theirs = model.predict(inputs, samples_of(METAS), rescale=False)
        ours = detector.select(detector.candidates(inputs, METAS), -1.0, 0, METAS)
    for det, ref in zip(ours, theirs):
        ref = ref.pred_instances
        assert len(det) == len(ref) > 5
        assert torch.equal(det.labels, ref.labels)
        assert torch.equal(det.scores, ref.scores)
        assert torch.equal(det.boxes, ref.bboxes)
        height, width = ref.masks.shape[-2:]
        assert det.masks.shape == (len(ref), *INPUT[2:])
        # Bit for bit at 1 thread; at 2, BoxInst's random model flipped 1 pixel of 1.8 M at
        # the mask threshold (the same logits rounded differently): allow 1 in 100000.
        flipped = int((det.masks[:, :height, :width] != ref.masks).sum())
        assert flipped <= max(1, ref.masks.numel() // 100000), flipped
        assert not det.masks[:, height:].any() and not det.masks[:, :, width:].any()
        assert 0 < int(ref.masks.sum()) < ref.masks.numel()  # masks with content


def assert_selection_equals_predict(model: nn.Module, detector, inputs: torch.Tensor,
                                    by_class: bool = False) -> None:
    """The detections chosen from the candidates = ``model.predict`` (rescaled): same count,
    labels, scores and boxes; each box's score is its candidate's score of its class. With
    ``by_class`` the model lists its detections class by class (PAA's score voting), ours
    best first: ours are compared in that order (a stable sort by label)."""
    from mmyolo_vis_hooks.engine.detectors.base import samples_of
    with torch.no_grad():
        theirs = model.predict(inputs, samples_of(METAS), rescale=True)
        preds = detector.candidates(inputs, METAS)
        ours = detector.select(preds, -1.0, 0, METAS)
    for b, (det, ref) in enumerate(zip(ours, theirs)):
        ref = ref.pred_instances
        if by_class:
            order = torch.sort(det.labels, stable=True)[1]
            det = type(det)(*(getattr(det, f)[order] for f in
                              ('boxes', 'scores', 'labels', 'priors', 'levels')))
        assert len(det) == len(ref) > 5
        assert torch.equal(det.labels, ref.labels)
        assert torch.allclose(det.scores, ref.scores, rtol=1e-5, atol=1e-7)
        scale = torch.tensor(METAS[b]['scale_factor'] * 2)
        assert torch.allclose(det.boxes / scale, ref.bboxes, atol=1e-3)
        assert torch.allclose(preds.scores[b, det.priors, det.labels], det.scores, atol=1e-6)


def assert_decode_equals_predict(model: nn.Module, detector, inputs: torch.Tensor,
                                 metas=None, cfg=None, box_atol: float = 1e-4,
                                 score_rtol: float = 0.0) -> None:
    """Batched inference (the sliced tool: ``forward`` then ``decode`` with ``cfg``, the
    detector's test config by default) = ``model.predict(..., rescale=True)``: the same counts,
    labels and scores (equal, or within ``score_rtol``), boxes within ``box_atol`` (equal at
    0)."""
    from mmyolo_vis_hooks.engine.detectors.base import samples_of
    metas = METAS if metas is None else metas
    with torch.no_grad():
        theirs = [r.pred_instances for r in model.predict(inputs, samples_of(metas),
                                                          rescale=True)]
        bboxes, scores, labels, counts = detector.decode(
            detector.forward(inputs), metas, detector.test_cfg if cfg is None else cfg)
    assert counts == [len(ref) for ref in theirs] and sum(counts) > 5
    assert torch.equal(labels, torch.cat([ref.labels for ref in theirs]))
    ref_scores = torch.cat([ref.scores for ref in theirs])
    assert torch.equal(scores, ref_scores) if score_rtol == 0 else \
        torch.allclose(scores, ref_scores, rtol=score_rtol)
    ref_boxes = torch.cat([ref.bboxes for ref in theirs])
    assert torch.equal(bboxes, ref_boxes) if box_atol == 0 else \
        torch.allclose(bboxes, ref_boxes, atol=box_atol)


# ------------------------------------------------------- small kinds in a Runner, alignment
KINDS = {
    'retinanet': 'retinanet/retinanet_r18_fpn_1x_coco.py',
    'faster_rcnn': 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'mask_rcnn': 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'dino': 'dino/dino-4scale_r50_8xb2-12e_coco.py',
}
# (w, h) of the keep-ratio resize; neither side a multiple of 32, so pad_size_divisor pads.
SCALE = (330, 250)
CLASSES = ('wave', )
# (w, h) of the two alignment images: landscape and portrait.
IMAGE_SIZES = ((450, 321), (286, 385))
PERIOD, PLATEAU, RAMP = 64, 8, 24
# Original pixels between a kink and the nearest pixel compared: the resize and the sampling
# back each blend pixels up to one input pixel away (1.6 original pixels at most here).
KINK_MARGIN = 4


def wave(length: int) -> np.ndarray:
    """The trapezoid wave over ``length`` pixels as float grey levels (255-plateau at 0)."""
    t = np.arange(length) % PERIOD
    distance = np.abs(t - PERIOD / 2)  # 32 at t=0 (255-plateau), 0 at t=32 (0-plateau)
    return np.clip((distance - PLATEAU / 2) * 255.0 / RAMP, 0, 255)


def affine_mask(length: int) -> np.ndarray:
    """True where the wave is affine at least ``KINK_MARGIN`` pixels around."""
    t = np.arange(length) % PERIOD
    kinks = np.array([PLATEAU / 2, PLATEAU / 2 + RAMP, PERIOD - PLATEAU / 2 - RAMP,
                      PERIOD - PLATEAU / 2])  # 4, 28, 36, 60
    distance = np.abs(t[:, None] - kinks[None, :])
    distance = np.minimum(distance, PERIOD - distance).min(axis=1)
    return distance >= KINK_MARGIN


def wave_image(width: int, height: int) -> np.ndarray:
    """BGR uint8 image: red = wave along x, green = wave along y, blue = 0."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 2] = np.round(wave(width))[None, :]
    img[..., 1] = np.round(wave(height))[:, None]
    return img


def wave_ellipse(width: int, height: int, vertices: int = 48) -> np.ndarray:
    """The ``(vertices, 2)`` polygon of the ellipse inscribed in an image's ground-truth box
    (its instance mask; not the box, so that a mask-based measure differs from the box's)."""
    angles = np.arange(vertices) * 2 * np.pi / vertices
    return np.stack([width / 2 + width / 4 * np.cos(angles),
                     height / 2 + height / 4 * np.sin(angles)], axis=1)


def write_wave_dataset(root: str, segmentation: bool = False) -> Dict[str, str]:
    """Writes the alignment images and a COCO annotation file (one box each; with
    ``segmentation`` also its instance mask, :func:`wave_ellipse` as a COCO polygon) under
    ``root``.

    Returns:
        dict: ``data_root``, ``ann_file`` (relative) and ``images`` (file names in order).
    """
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, annotations, names = [], [], []
    for idx, (width, height) in enumerate(IMAGE_SIZES):
        name = f'wave_{idx}.png'
        cv2.imwrite(osp.join(root, 'images', name), wave_image(width, height))
        images.append(dict(id=idx + 1, file_name=name, width=width, height=height))
        box = [width / 4, height / 4, width / 2, height / 2]
        annotations.append(dict(id=idx + 1, image_id=idx + 1, category_id=1, bbox=box,
                                area=box[2] * box[3], iscrowd=0))
        if segmentation:
            annotations[-1]['segmentation'] = [
                np.round(wave_ellipse(width, height), 2).ravel().tolist()]
        names.append(name)
    ann = dict(images=images, annotations=annotations,
               categories=[dict(id=1, name=CLASSES[0])])
    with open(osp.join(root, 'annotations.json'), 'w', encoding='utf-8') as f:
        json.dump(ann, f)
    return dict(data_root=root + '/', ann_file='annotations.json', images=names)


def _drop_pretrained(node) -> None:
    """Removes every ``init_cfg=dict(type='Pretrained', ...)`` (a download)."""
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            _drop_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _drop_pretrained(item)


def _at_scale(pipeline: List[dict], scale: Tuple[int, int]) -> List[dict]:
    for step in pipeline:
        if step['type'].split('.')[-1] == 'Resize':
            step['scale'] = scale
    return pipeline


def small_kind_cfg(kind: str, scale: Tuple[int, int] = SCALE) -> Config:
    """The packaged config of ``kind`` shrunk for the CPU (see the module docstring), with
    ``len(CLASSES)`` classes; its pipelines resize to ``scale`` ``(w, h)``."""
    cfg = Config.fromfile(mmdet_config(KINDS[kind]))
    model = cfg.model
    _drop_pretrained(model)
    replace_key(model, 'num_classes', len(CLASSES))
    model.backbone.depth = 18
    if kind == 'retinanet':
        model.neck.update(in_channels=[64, 128, 256, 512], out_channels=64)
        model.bbox_head.update(in_channels=64, feat_channels=64, stacked_convs=1)
    elif kind in ('faster_rcnn', 'mask_rcnn'):
        model.neck.update(in_channels=[64, 128, 256, 512], out_channels=64)
        model.rpn_head.update(in_channels=64, feat_channels=64)
        model.roi_head.bbox_roi_extractor.out_channels = 64
        model.roi_head.bbox_head.update(in_channels=64, fc_out_channels=128)
        model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
        model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        model.train_cfg.rcnn.sampler.num = 64
        if kind == 'mask_rcnn':
            model.roi_head.mask_roi_extractor.out_channels = 64
            model.roi_head.mask_head.update(in_channels=64, conv_out_channels=64, num_convs=2)
    elif kind == 'dino':
        model.neck.in_channels = [128, 256, 512]
        model.num_queries = 100
        model.encoder.num_layers = 1
        model.decoder.num_layers = 1
        model.encoder.layer_cfg.ffn_cfg.feedforward_channels = 256
        model.decoder.layer_cfg.ffn_cfg.feedforward_channels = 256
        model.dn_cfg.group_cfg.num_dn_queries = 10
        model.test_cfg.max_per_img = 100
    else:
        raise ValueError(f'unknown kind {kind!r}; expected one of {sorted(KINDS)}')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        _at_scale(cfg[loader].dataset.pipeline, scale)
    if cfg.get('test_pipeline'):
        _at_scale(cfg.test_pipeline, scale)
    return cfg


def runner_cfg(kind: str, dataset: Dict[str, str], work_dir: str,
               custom_hooks: List[dict], scale: Tuple[int, int] = SCALE) -> Config:
    """``small_kind_cfg(kind, scale)`` on the alignment images: one training iteration (batch
    2, the test-time resize; instance masks loaded for a model with a mask head), then one
    validation epoch with both images in one batch."""
    cfg = small_kind_cfg(kind, scale)
    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    val_pipeline = cfg.val_dataloader.dataset.pipeline
    resize = next(s for s in val_pipeline if s['type'] == 'Resize')
    train_pipeline = [dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
                      dict(resize),
                      dict(type='PackDetInputs')]
    for loader, pipeline in ((cfg.train_dataloader, train_pipeline),
                             (cfg.val_dataloader, val_pipeline)):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.sampler = dict(type='DefaultSampler', shuffle=False)
        loader.pop('batch_sampler', None)  # AspectRatioBatchSampler would split the pair
        loader.dataset.update(data_root=dataset['data_root'], ann_file=dataset['ann_file'],
                              data_prefix=dict(img='images/'), metainfo=dict(classes=CLASSES),
                              pipeline=pipeline, filter_cfg=None)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(
        type='CocoMetric', ann_file=dataset['data_root'] + dataset['ann_file'], metric='bbox')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = None
    cfg.custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
    cfg.custom_hooks = list(custom_hooks)
    cfg.visualizer.vis_backends = [dict(type='TensorboardVisBackend')]
    return cfg


def batch_layout(divisor: int) -> Tuple[Tuple[int, int], List[Tuple[int, int]]]:
    """The validation batch of the two alignment images at ``SCALE``: its padded ``(H, W)``
    (largest image, then ``pad_size_divisor``) and each image's resized ``(h, w)``, from
    MMCV's own keep-ratio rule (``mmcv.rescale_size``)."""
    import mmcv
    sizes = [mmcv.rescale_size((w, h), SCALE)[::-1] for w, h in IMAGE_SIZES]
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    return ((-(-height // divisor) * divisor, -(-width // divisor) * divisor), sizes)

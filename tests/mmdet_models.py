"""Random-init MMDetection detectors from its packaged configs, small enough for the CPU: BN
statistics refitted on random inputs (a random network whose scores vary), cached per session.
Building never calls ``init_weights``, so the configs' pretrained ``init_cfg`` download nothing."""
import torch
from torch import nn

from mmdet_kinds import mmdet_config
from mmyolo_vis_hooks.runtime.models import build_detector, initialize_without_downloads
from mmyolo_vis_hooks.testing.cam_reference import calibrate_batchnorm

# One config per code path of the MMDetection dense kind: anchors with sigmoid classes, points
# with a centerness factor (FCOS, ATSS), softmax classes with a background column (SSD-lite),
# and MMDetection's own RTMDet (a namesake of MMYOLO's head).
DENSE = {
    'retinanet': 'retinanet/retinanet_r18_fpn_1x_coco.py',
    'fcos': 'fcos/fcos_r18_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py',
    'atss': 'atss/atss_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'ssdlite': 'ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
    'rtmdet': 'rtmdet/rtmdet_tiny_8xb32-300e_coco.py',
}
# Two-stage: a standard RoI head, a cascade (mean of the stages' logits), and Mask R-CNN's box
# branch.
TWO_STAGE = {
    'faster_rcnn': 'faster_rcnn/faster-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'cascade_rcnn': 'cascade_rcnn/cascade-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'mask_rcnn': 'mask_rcnn/mask-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py',
    'cascade_mask_rcnn': 'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
}
# DETR family: softmax classes (DETR), sigmoid classes with learned queries (Deformable DETR)
# and queries chosen from the encoder's proposals (DINO); ResNet-50 swapped for a ResNet-18.
DETR = {
    'detr': 'detr/detr_r18_8xb2-500e_coco.py',
    'deformable_detr': 'deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
    'dino': 'dino/dino-4scale_r50_8xb2-12e_coco.py',
}
# MMDetection's own instance-segmentation dense head (engine/detectors/mmdet_instance.py).
INSTANCE = {
    'mmdet_rtmdet_ins': 'rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py',
    'yolact': 'yolact/yolact_r50_1xb8-55e_coco.py',
}
R18_CHANNELS = {'deformable_detr': [128, 256, 512], 'dino': [128, 256, 512],
                'cascade_mask_rcnn': [64, 128, 256, 512], 'yolact': [64, 128, 256, 512]}
CONFIGS = dict(DENSE, **TWO_STAGE, **DETR, **INSTANCE)
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
        if name == 'dino':  # 900 queries; 100 keep the code path and the CPU time small
            options['model.num_queries'] = 100
        model = build_detector(mmdet_config(CONFIGS[name]), device='cpu', cfg_options=options)
        if name in DETR:  # uninitialized parameters otherwise; the other kinds keep the
            initialize_without_downloads(model)  # constructors' init (scores above 0.05)
        calibrate_batchnorm(model, INPUT)
        if name == 'mmdet_rtmdet_ins':
            # As MMYOLO's RTMDet-ins (family_models): its random classifier saturates (top
            # scores exactly 1.0 in float32, zero score gradients, arbitrary order of ties).
            with torch.no_grad():
                for conv in model.bbox_head.rtm_cls:
                    conv.weight.mul_(0.05)
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
                                   topk: int = 3) -> None:
    """Per box, our GradCAM (target ``log_score``: the gradient of the score) equals
    grad-cam's ``GradCAM`` on the flat candidate scores with a target selecting the box's
    (candidate, class), on the taps of feature ``levels`` (all when None)."""
    import numpy as np
    import pytorch_grad_cam as gc
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    from mmyolo_vis_hooks.testing.cam_reference import BoxScoreTarget, FlatScoresModel
    wrapper = FlatScoresModel(model)
    try:
        result = BoxCAM(model, 'gradcam', score_thr=0.0, topk=topk,
                        target='log_score')(inputs)[0]
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
                                         num_masks: int, reliable: bool = False) -> None:
    """Each method explains 2 boxes with finite maps of the input's size (with ``reliable``,
    at least one of them more than float noise), and the model's weights, buffers, modes and
    ``.grad`` are as before."""
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    model.train()  # a state to restore
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    try:
        for method in methods:
            options = dict(num_masks=num_masks, batch_size=16) if method == 'drise' else {}
            if method == 'ablationcam':
                options = dict(batch_size=64, ratio_channels_to_ablate=ratio_channels_to_ablate)
            result = BoxCAM(model, method, score_thr=0.0, topk=2, **options)(inputs,
                                                                             METAS[:1])[0]
            assert len(result) == 2, method
            maps = result.box_maps()
            assert maps.shape == (2, *INPUT[2:]) and torch.isfinite(maps).all(), method
            assert result.reliable.any() or not reliable, (method, result.reasons)
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def assert_masks_equal_predict(model: nn.Module, detector, inputs: torch.Tensor) -> None:
    """Instance segmentation: the detections chosen from the candidates, with their masks on
    the network input, = ``model.predict(..., rescale=False)`` (same labels, scores, boxes
    and masks, bit for bit: the masks are the model's own ``img_shape`` pastes, padded)."""
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
        assert torch.equal(det.masks[:, :height, :width], ref.masks)
        assert not det.masks[:, height:].any() and not det.masks[:, :, width:].any()
        assert 0 < int(ref.masks.sum()) < ref.masks.numel()  # masks with content


def assert_selection_equals_predict(model: nn.Module, detector, inputs: torch.Tensor) -> None:
    """The detections chosen from the candidates = ``model.predict`` (rescaled): same count,
    labels, scores and boxes; each box's score is its candidate's score of its class."""
    from mmyolo_vis_hooks.engine.detectors.base import samples_of
    with torch.no_grad():
        theirs = model.predict(inputs, samples_of(METAS), rescale=True)
        preds = detector.candidates(inputs, METAS)
        ours = detector.select(preds, -1.0, 0, METAS)
    for b, (det, ref) in enumerate(zip(ours, theirs)):
        ref = ref.pred_instances
        assert len(det) == len(ref) > 5
        assert torch.equal(det.labels, ref.labels)
        assert torch.allclose(det.scores, ref.scores, rtol=1e-5, atol=1e-7)
        scale = torch.tensor(METAS[b]['scale_factor'] * 2)
        assert torch.allclose(det.boxes / scale, ref.bboxes, atol=1e-3)
        assert torch.allclose(preds.scores[b, det.priors, det.labels], det.scores, atol=1e-6)

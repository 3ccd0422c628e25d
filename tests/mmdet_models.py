"""Random-init MMDetection detectors from its packaged configs, small enough for the CPU: BN
statistics refitted on random inputs (a random network whose scores vary), cached per session.
Building never calls ``init_weights``, so the configs' pretrained ``init_cfg`` download nothing."""
import torch
from torch import nn

from mmdet_kinds import mmdet_config
from mmyolo_vis_hooks.runtime.models import build_detector
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
}
# DETR family: softmax classes (DETR), sigmoid classes with learned queries (Deformable DETR)
# and queries chosen from the encoder's proposals (DINO); ResNet-50 swapped for a ResNet-18.
DETR = {
    'detr': 'detr/detr_r18_8xb2-500e_coco.py',
    'deformable_detr': 'deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
    'dino': 'dino/dino-4scale_r50_8xb2-12e_coco.py',
}
R18_CHANNELS = {'deformable_detr': [128, 256, 512], 'dino': [128, 256, 512]}
CONFIGS = dict(DENSE, **TWO_STAGE, **DETR)
INPUT = (2, 3, 128, 160)
_MODELS = {}


def initialize_without_downloads(model: nn.Module) -> None:
    """``init_weights`` with the ``Pretrained`` entries dropped: parameters that MMDetection
    creates uninitialized (DETRs' ``torch.Tensor(...)`` level embeddings, Sparse R-CNN's
    proposal boxes) get their documented random init instead of whatever memory held (NaN
    once deterministic algorithms are on: PyTorch then fills uninitialized memory with NaN)."""
    def pretrained(entry) -> bool:
        return isinstance(entry, dict) and entry.get('type') == 'Pretrained'
    for module in model.modules():
        cfg = getattr(module, 'init_cfg', None)
        if pretrained(cfg):
            module.init_cfg = None
        elif isinstance(cfg, list):
            module.init_cfg = [entry for entry in cfg if not pretrained(entry)]
    model.init_weights()


def random_mmdet_model(name: str) -> nn.Module:
    """A random-init model of ``CONFIGS[name]`` (cached; tests must leave it as they found
    it)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        options = {}
        if name in TWO_STAGE:  # 1000 proposals make the RoI head's FC layers 13 GFLOPs
            options = {'model.test_cfg.rpn.nms_pre': 256, 'model.test_cfg.rpn.max_per_img': 64}
        if name in R18_CHANNELS:
            options = {'model.backbone.depth': 18, 'model.backbone.init_cfg': None,
                       'model.neck.in_channels': R18_CHANNELS[name]}
        if name == 'dino':  # 900 queries; 100 keep the code path and the CPU time small
            options['model.num_queries'] = 100
        model = build_detector(mmdet_config(CONFIGS[name]), device='cpu', cfg_options=options)
        if name in DETR:  # uninitialized parameters otherwise; the other kinds keep the
            initialize_without_downloads(model)  # constructors' init (scores above 0.05)
        calibrate_batchnorm(model, INPUT)
        _MODELS[name] = model
    return _MODELS[name]

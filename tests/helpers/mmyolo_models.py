"""Random-init models of every MMYOLO family from the packaged configs (smallest variant of
each), BN statistics refitted on random inputs, cached per session."""
import torch
from torch import nn

from mmyolo_vis_hooks.runtime.models import build_detector
from mmyolo_vis_hooks.testing.cam_reference import calibrate_batchnorm

from . import packaged_config

FAMILIES = {
    'yolov5': 'yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py',
    'yolov6': 'yolov6/yolov6_n_syncbn_fast_8xb32-300e_coco.py',
    'yolox': 'yolox/yolox_nano_fast_8xb8-300e_coco.py',
    'rtmdet': 'rtmdet/rtmdet_tiny_syncbn_fast_8xb32-300e_coco.py',
    'yolov7': 'yolov7/yolov7_tiny_syncbn_fast_8x16b-300e_coco.py',
    'yolov8': 'yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py',
    'ppyoloe': 'ppyoloe/ppyoloe_s_fast_8xb32-300e_coco.py',
}
# MMYOLO's instance-segmentation configs (engine/detectors/mmyolo_instance.py).
INSTANCE = {
    'yolov5_ins': 'yolov5/ins_seg/yolov5_ins_n-v61_syncbn_fast_8xb16-300e_coco_instance.py',
    'rtmdet_ins': 'rtmdet/rtmdet-ins_s_syncbn_fast_8xb32-300e_coco.py',
}
# MMYOLO's rotated-box config (engine/detectors/rotated.py; needs mmrotate 1.x).
ROTATED = {
    'rtmdet_r': 'rtmdet/rotated/rtmdet-r_tiny_fast_1xb8-36e_dota.py',
}
# MMYOLO's pose config (engine/detectors/pose.py; building it needs mmpose).
POSE = {'yolox_pose': 'yolox/pose/yolox-pose_tiny_8xb32-300e-rtmdet-hyp_coco.py'}
INPUT = (2, 3, 160, 192)
_MODELS = {}


def random_model(family: str) -> nn.Module:
    """A random-init model of ``family`` with BN statistics refitted on random inputs of shape
    ``INPUT`` (cached per session; tests must leave it as they found it)."""
    configs = dict(FAMILIES, **INSTANCE, **ROTATED, **POSE)
    if family not in configs:
        raise ValueError(f'unknown family {family!r}; expected one of {sorted(configs)}')
    if family not in _MODELS:
        torch.manual_seed(0)
        model = build_detector(packaged_config(configs[family]))
        calibrate_batchnorm(model, INPUT)
        if family == 'rtmdet_ins':
            # Its random classifier saturates: every top score is exactly 1.0 in float32, and
            # the order of tied scores is arbitrary. Smaller class logits keep them distinct.
            with torch.no_grad():
                for conv in model.bbox_head.head_module.rtm_cls:
                    conv.weight.mul_(0.05)
        if family == 'rtmdet_r':
            # The same saturation, and box distances of hundreds of pixels either way
            # (negative sizes). Smaller outputs around a prior give scores that spread (a few
            # above 0.3: its rotated NMS is quadratic in the candidates) and boxes about two
            # strides wide.
            module = model.bbox_head.head_module
            with torch.no_grad():
                for cls_conv, reg_conv in zip(module.rtm_cls, module.rtm_reg):
                    cls_conv.weight.mul_(0.05)
                    cls_conv.bias.fill_(-2.0)
                    reg_conv.weight.mul_(0.01)
                    reg_conv.bias.fill_(1.0)
        _MODELS[family] = model
    return _MODELS[family]


def yolov5_ins_with_demo_weights(config, out_path: str) -> str:
    """Saves (as ``{'state_dict': ...}`` at ``out_path``) a YOLOv5-ins of ``config`` (3
    classes) holding the trained demo detector's weights (tests/assets/yolov5_n_shapes.pth):
    backbone, neck, and the box/objectness/class rows of each anchor in the head's prediction
    convolutions; the mask branch (prototypes, mask coefficients) stays random (seed 0). A
    random network's features are so flat at first that its masks fill their boxes; trained
    features give masks with outlines of their own. Returns ``out_path``."""
    from . import DEMO_CHECKPOINT
    torch.manual_seed(0)
    model = build_detector(config, device='cpu')
    own = model.state_dict()
    demo = torch.load(DEMO_CHECKPOINT, map_location='cpu', weights_only=True)['state_dict']
    num_anchors = model.bbox_head.num_base_priors
    for key, value in demo.items():
        if key.startswith('bbox_head.head_module.convs_pred'):
            # Per anchor: (box, objectness, classes) rows first, then the mask coefficients.
            rows = own[key].view(num_anchors, -1, *own[key].shape[1:])
            rows[:, :value.shape[0] // num_anchors] = value.view(num_anchors, -1,
                                                                 *value.shape[1:])
        elif own.get(key) is not None and own[key].shape == value.shape:
            own[key].copy_(value)
        else:
            raise ValueError(f'demo weight {key} {tuple(value.shape)} has no place in the '
                             f'YOLOv5-ins model')
    torch.save(dict(state_dict=own), out_path)
    return out_path

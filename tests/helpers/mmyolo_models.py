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
INPUT = (2, 3, 160, 192)
_MODELS = {}


def random_model(family: str) -> nn.Module:
    """A random-init model of ``family`` with BN statistics refitted on random inputs of shape
    ``INPUT`` (cached per session; tests must leave it as they found it)."""
    if family not in FAMILIES:
        raise ValueError(f'unknown family {family!r}; expected one of {sorted(FAMILIES)}')
    if family not in _MODELS:
        torch.manual_seed(0)
        model = build_detector(packaged_config(FAMILIES[family]))
        calibrate_batchnorm(model, INPUT)
        _MODELS[family] = model
    return _MODELS[family]

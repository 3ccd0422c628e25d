"""``initialize_without_downloads``: the documented random init, never a download, whether an
``init_cfg`` names its checkpoint with ``type='Pretrained'`` or (as PVT's) alone."""
import pytest
import torch
from mmengine.model import BaseModule

from mmyolo_vis_hooks.runtime.models import initialize_without_downloads

URL = 'https://download.invalid/weights.pth'  # never resolves: a download attempt would raise


class Backbone(BaseModule):
    """Loads ``init_cfg.checkpoint`` in ``init_weights`` as PVT does, else its own init."""

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def init_weights(self):
        if self.init_cfg is not None and 'checkpoint' in self.init_cfg:
            raise AssertionError(f'would download {self.init_cfg["checkpoint"]}')
        if getattr(self, 'pretrained', None) is not None:  # DetectoRS' ResNet
            raise AssertionError(f'would download {self.pretrained}')
        torch.nn.init.constant_(self.conv.weight, 0.5)


class Detector(BaseModule):

    def __init__(self, backbone_init_cfg):
        super().__init__()
        self.backbone = Backbone(backbone_init_cfg)
        self.head = torch.nn.Linear(2, 2)


@pytest.mark.parametrize('init_cfg', [dict(checkpoint=URL),
                                      dict(type='Pretrained', checkpoint=URL)])
def test_a_pretrained_init_cfg_is_dropped_and_the_modules_own_init_runs(init_cfg):
    model = Detector(init_cfg)
    initialize_without_downloads(model)
    assert model.backbone.init_cfg is None
    assert torch.all(model.backbone.conv.weight == 0.5)


def test_a_pretrained_attribute_is_dropped():
    """DetectoRS' ResNet keeps its ``pretrained`` URL as an attribute and loads it in
    ``init_weights``."""
    model = Detector(None)
    model.backbone.pretrained = 'torchvision://resnet101'
    initialize_without_downloads(model)
    assert model.backbone.pretrained is None
    assert torch.all(model.backbone.conv.weight == 0.5)


def test_other_init_entries_are_kept():
    model = Detector(None)
    model.head.init_cfg = [dict(type='Pretrained', checkpoint=URL),
                           dict(type='Constant', layer='Linear', val=0.25)]
    initialize_without_downloads(model)
    assert model.head.init_cfg == [dict(type='Constant', layer='Linear', val=0.25)]


@pytest.mark.slow
def test_tools_random_weights_are_the_documented_init():
    """Without a checkpoint the tools build with ``init_weights=True``: Deformable DETR's level
    embeddings, created uninitialized by its constructor (NaN once PyTorch fills uninitialized
    memory deterministically), get their random init."""
    from helpers import mmdet_config
    from mmyolo_vis_hooks.runtime.models import build_detector
    config = mmdet_config('deformable_detr/deformable-detr_r50_16xb2-50e_coco.py')
    options = {'model.backbone.depth': 18, 'model.backbone.init_cfg': None,
               'model.neck.in_channels': [128, 256, 512]}
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        raw = build_detector(config, device='cpu', cfg_options=options)
        tool = build_detector(config, device='cpu', cfg_options=options, init_weights=True)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert torch.isnan(raw.level_embed).all()
    assert torch.isfinite(tool.level_embed).all() and tool.level_embed.std() > 0.5
    assert all(torch.isfinite(p).all() for p in tool.parameters())

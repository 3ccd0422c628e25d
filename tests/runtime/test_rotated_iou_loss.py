"""The CPU rotated-IoU loss of the rotated demo detector (runtime/rotated_iou_loss.py): mmcv's
differentiable rotated IoU with the vertex sort in torch."""
import pytest
import torch

pytest.importorskip('mmrotate', reason='rotated boxes need mmrotate 1.x')


def _box_pairs(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    boxes = torch.rand(n, 5, generator=gen) * torch.tensor([50., 50., 40., 40., torch.pi])
    boxes += torch.tensor([0., 0., 2., 2., -torch.pi / 2])
    others = boxes + torch.randn(n, 5, generator=gen) * torch.tensor([8., 8., 8., 8., 0.6])
    others[:, 2:4] = others[:, 2:4].abs() + 1
    return boxes, others


def test_rotated_iou_is_mmcvs_on_the_cpu():
    """Equal to mmcv's (non-differentiable) ``box_iou_rotated`` on overlapping, nested and
    disjoint pairs, with finite gradients."""
    from mmcv.ops import box_iou_rotated

    from mmyolo_vis_hooks.runtime.rotated_iou_loss import rotated_iou
    boxes, others = _box_pairs(2000, 0)
    boxes.requires_grad_()
    ours = rotated_iou(boxes[None], others[None])[0]
    theirs = box_iou_rotated(boxes.detach(), others, aligned=True)
    assert (theirs == 0).sum() > 50 and (theirs > 0.5).sum() > 50
    assert torch.allclose(ours, theirs, atol=1e-4)
    ours.sum().backward()
    assert torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0


def test_loss_matches_mmrotates_definition_and_is_registered():
    from mmengine.registry import MODELS

    from mmyolo_vis_hooks.runtime.rotated_iou_loss import TorchRotatedIoULoss, rotated_iou
    loss = MODELS.build(dict(type='TorchRotatedIoULoss', mode='linear', loss_weight=2.0))
    assert isinstance(loss, TorchRotatedIoULoss)
    boxes, others = _box_pairs(64, 1)
    weight = torch.rand(64, generator=torch.Generator().manual_seed(2))
    ious = rotated_iou(boxes[None], others[None])[0].clamp(min=1e-6)
    expected = 2.0 * ((1 - ious) * weight).sum() / 10.0
    assert torch.allclose(loss(boxes, others, weight=weight, avg_factor=10.0), expected)
    # no positive weight: zero, still attached to the graph
    pred = boxes.clone().requires_grad_()
    zero = loss(pred, others, weight=torch.zeros(64))
    assert zero.item() == 0 and zero.requires_grad
    with pytest.raises(ValueError, match='mode'):
        TorchRotatedIoULoss(mode='cubic')

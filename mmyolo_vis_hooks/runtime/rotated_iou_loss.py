"""A rotated-IoU loss that trains on the CPU (the rotated demo detector, RTMDet-R).

mmrotate's ``RotatedIoULoss`` (RTMDet-R's box loss) calls mmcv's ``diff_iou_rotated_2d``, whose
one compiled step, sorting the intersection polygon's vertices, exists only for CUDA. Here that
sort is done in torch; the rest (corners, edge intersections, shoelace area) is mmcv's own
Python, so the IoU and its gradient are mmcv's. Importing this module registers
``TorchRotatedIoULoss`` into MMEngine's root ``MODELS`` (every scope finds it); configs import
it with ``custom_imports``.
"""
import torch
from mmdet.models.losses.utils import weighted_loss
from mmengine.registry import MODELS
from torch import Tensor, nn

def sort_vertices(vertices: Tensor, mask: Tensor) -> Tensor:
    """Indices of the valid vertices in angular order, for mmcv's ``calculate_area`` (the
    shoelace sum over consecutive indices).

    mmcv's CUDA op returns 9 indices (an intersection has at most 8 distinct vertices); here
    every candidate keeps a slot, since coincident candidates (identical or touching boxes)
    can make more than 8 valid ones.

    Args:
        vertices (Tensor): ``(B, N, 24, 2)`` candidate vertices (``build_vertices``).
        mask (Tensor): ``(B, N, 24)`` which candidates are vertices.

    Returns:
        Tensor: ``(B, N, 25)`` indices: the valid vertices around their mean, then the first
        one again in every remaining slot (repeats add zero to the shoelace sum).
    """
    valid = mask.sum(dim=2, keepdim=True)
    mean = (vertices * mask[..., None]).sum(dim=2, keepdim=True) / valid.clamp(min=1)[..., None]
    rel = vertices - mean
    angle = torch.atan2(rel[..., 1], rel[..., 0]).masked_fill(~mask, float('inf'))
    order = angle.argsort(dim=2)
    order = torch.cat([order, order[..., :1]], dim=2)
    slot = torch.arange(order.shape[2], device=vertices.device)
    return torch.where(slot < valid, order, order[..., :1])


def rotated_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Differentiable IoU of aligned rotated boxes (mmcv's ``diff_iou_rotated_2d`` with the
    vertex sort in torch).

    Args:
        boxes1 (Tensor): ``(B, N, 5)`` boxes ``(cx, cy, w, h, angle)``.
        boxes2 (Tensor): ``(B, N, 5)`` boxes.

    Returns:
        Tensor: ``(B, N)`` IoU of each pair.
    """
    from mmcv.ops.diff_iou_rotated import (box2corners, box_in_box, box_intersection,
                                           build_vertices, calculate_area)
    corners1, corners2 = box2corners(boxes1), box2corners(boxes2)
    intersections, valid = box_intersection(corners1, corners2)
    c12, c21 = box_in_box(corners1, corners2)
    vertices, mask = build_vertices(corners1, corners2, c12, c21, intersections, valid)
    intersection, _ = calculate_area(sort_vertices(vertices, mask), vertices)
    union = boxes1[..., 2] * boxes1[..., 3] + boxes2[..., 2] * boxes2[..., 3] - intersection
    return intersection / union


@weighted_loss
def _rotated_iou_loss(pred: Tensor, target: Tensor, mode: str = 'log',
                      eps: float = 1e-6) -> Tensor:
    ious = rotated_iou(pred[None], target[None])[0].clamp(min=eps)
    if mode == 'linear':
        return 1 - ious
    if mode == 'square':
        return 1 - ious**2
    return -ious.log()


@MODELS.register_module()
class TorchRotatedIoULoss(nn.Module):
    """mmrotate's ``RotatedIoULoss`` (same arguments but the deprecated ``linear``, same
    loss) computed with :func:`rotated_iou`, so that it runs on the CPU too.

    Args:
        mode (str): ``'linear'`` (1 - IoU), ``'square'`` (1 - IoU²) or ``'log'`` (-log IoU).
            Defaults to ``'log'``.
        eps (float): Lower bound of the IoU. Defaults to 1e-6.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to ``'mean'``.
        loss_weight (float): Weight of the loss. Defaults to 1.0.
    """

    def __init__(self, mode: str = 'log', eps: float = 1e-6, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if mode not in ('linear', 'square', 'log'):
            raise ValueError(f"mode must be 'linear', 'square' or 'log', got {mode!r}")
        self.mode, self.eps, self.reduction, self.loss_weight = mode, eps, reduction, loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor = None,
                avg_factor: float = None, reduction_override: str = None) -> Tensor:
        """The weighted loss of ``(n, 5)`` predictions against ``(n, 5)`` targets."""
        reduction = reduction_override or self.reduction
        if weight is not None and not torch.any(weight > 0) and reduction != 'none':
            return (pred * weight[:, None]).sum()  # zero, with the graph kept
        if weight is not None and weight.dim() > 1:  # per-coordinate weights, as mmrotate
            weight = weight.mean(-1)
        return self.loss_weight * _rotated_iou_loss(
            pred.float(), target.float(), weight, mode=self.mode, eps=self.eps,
            reduction=reduction, avg_factor=avg_factor)

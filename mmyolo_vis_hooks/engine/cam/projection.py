"""First-principal-component projection of activation maps (EigenCAM, EigenGradCAM).

grad-cam's ``get_2d_projection`` runs a full SVD of the centred ``(H*W, C)`` matrix with
``full_matrices=True``, which also builds the ``H*W x H*W`` left basis: seconds for an 80x80x128
map. Only the first right-singular vector is needed, and it is the leading eigenvector of the
``C x C`` covariance ``X^T X``: one ``(H*W, C)`` matrix product and a ``C x C`` eigh.
"""
import torch
from torch import Tensor


def first_component_projection(maps: Tensor) -> Tensor:
    """Projects every location onto the first principal component of the channels.

    Args:
        maps (Tensor): ``(N, C, H, W)``; NaNs count as 0 (as in grad-cam).

    Returns:
        Tensor: ``(N, H, W)`` projections of the centred maps. The sign of a principal
        component is arbitrary (grad-cam keeps whatever LAPACK returns); here it is fixed so
        that the largest magnitude is positive (the sign correction of Seg-Eigen-CAM, grad-cam's
        ``get_2d_projection_with_sign_correction``), so salient regions come out positive.
    """
    if maps.dim() != 4:
        raise ValueError(f'expected (N, C, H, W) maps, got shape {tuple(maps.shape)}')
    n, c, h, w = maps.shape
    x = torch.nan_to_num(maps.detach().float(), nan=0.0).reshape(n, c, h * w)
    x = x - x.mean(dim=2, keepdim=True)  # centre every channel over the locations
    # C x C covariance in float32 (one pass over the map), its eigen-decomposition in float64.
    _, vectors = torch.linalg.eigh((x @ x.transpose(1, 2)).double())  # ascending eigenvalues
    leading = vectors[:, :, -1].to(x.dtype)
    projection = (leading[:, None, :] @ x)[:, 0]  # (n, H*W)
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return projection.reshape(n, h, w).to(maps.dtype)

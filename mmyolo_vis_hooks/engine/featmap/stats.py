"""Activation statistics of a layer over several images (histogram, mean, std, dead share)."""
import math
from typing import Sequence

import torch


def activation_stats(featmaps: Sequence[torch.Tensor], dead_eps: float = 1e-6,
                     max_values: int = 100_000) -> dict:
    """Statistics of one layer over several images (each CHW, same C).

    Returns:
        dict: ``mean``, ``std``, ``dead_ratio`` (share of channels whose activation never
        exceeds ``dead_eps`` on any pixel of any image), ``values`` (a float32 sample of the
        activations for a histogram, at most ``max_values``).
    """
    stacked = torch.stack([f.float() for f in featmaps])  # N, C, H, W
    finite = stacked[torch.isfinite(stacked)]
    if finite.numel() == 0:
        raise ValueError('no finite activations')
    channel_max = torch.nan_to_num(stacked, nan=-math.inf).amax(dim=(0, 2, 3))
    values = finite.flatten()
    if values.numel() > max_values:
        step = math.ceil(values.numel() / max_values)
        values = values[::step]
    return dict(mean=float(finite.mean()), std=float(finite.std(unbiased=False)),
                dead_ratio=float((channel_max <= dead_eps).float().mean()),
                values=values.numpy())

"""When a box's CAM is float32 noise: the one rule the engine, the hook and the tool share.

A box CAM is drawn by min-max normalising its raw maps, which stretches ANY variation to
[0, 1], including rounding noise. Two ways a box ends up with nothing but noise:

- **Underflow.** With ``target='log_score'`` the gradient at the head output is
  ``d log sigmoid(z) / dz = sigmoid(-z)``: for a logit ``z`` above ~87 it is subnormal in
  float32 (fewer significant bits than a normal number: its digits are lost), above ~104 it is
  exactly 0. Such a box also has a score of exactly 1.0, tied with every other saturated class,
  so even its label is arbitrary. Rule: the box's largest gradient magnitude (over all target
  layers) is below ``torch.finfo(float32).tiny`` (1.18e-38), zero included.
- **Cancellation.** A raw map entry is a float32 sum of terms (``w_c * A_c`` for channel-weighted
  methods, ``G_c * A_c`` for LayerCAM/EigenGradCAM, centred activations for EigenCAM); its
  rounding error is about ``eps * sum |terms|`` times a small factor, and a different kernel
  (batch 1 vs batch N, AVX2 vs AVX-512) or thread count changes those bits. Rule: on a target
  layer, the map is at noise level when its range (max - min over the locations) is at most
  ``NOISE_FACTOR * eps * M``, with ``eps = 2**-23`` (float32) and ``M`` the largest magnitude
  ``sum_c |term_c|`` of its entries (``BoxCAMMethod.map_and_magnitude``). A layer at noise
  level is left out of the box's composed map (its normalised noise would fill the picture);
  a box with every layer at noise level is unreliable.

Why ``NOISE_FACTOR = 1024``: two correct float32 computations of the same entry differ by up
to about ``(sqrt(n_map) + 2 * sqrt(n_in)) * eps * M``, where ``n_map`` is the number of terms
of the entry (the channels, 64-1024 here) and ``n_in`` the fan-in of the convolutions that
produced ``A`` and ``G`` (up to 9 x 1024): about 32 + 2 * 96 = 224 eps for the largest MMYOLO
models; the worst case grows linearly, not with the square root. 1024 leaves a factor ~4 above
that estimate, and stays far below real maps: on the trained demo detector (107 boxes, 16
images, every method and target) the smallest range of a box's best layer map is 1.1e3 times
the threshold (``benchmarks/bench_cam_targets.py`` prints this margin), so no real map is
refused, while a map made only of rounding residue is (``tests/engine/cam/test_box_targets.py``).

A box with a saturated score (exactly 1.0) may be tied with other classes, so its label is
arbitrary; with ``target='logit'`` its CAM still explains the chosen (prior, label) faithfully.
"""
from typing import List, Optional

import torch
from torch import Tensor

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)
NOISE_FACTOR = 1024.0


def noise_threshold(magnitude: Tensor) -> Tensor:
    """``(K, )`` the largest map range that is noise, from ``(K, h, w)`` term magnitudes."""
    return NOISE_FACTOR * FLOAT32_EPS * magnitude.detach().double().flatten(1).amax(dim=1)


def at_noise_level(raw: Tensor, magnitude: Tensor) -> Tensor:
    """``(K, )`` bool: the ``(K, h, w)`` raw map of each box varies no more than rounding noise
    of its terms (``magnitude``, same shape). A constant map (zero included) is at noise
    level: it has nothing to show."""
    flat = raw.detach().double().flatten(1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    return ~(span > noise_threshold(magnitude))  # NaN counts as noise


def box_reasons(layer_noise: Tensor, grad_peak: Optional[Tensor]) -> List[str]:
    """Why each box's CAM is unreliable (``''`` when it is not).

    Args:
        layer_noise (Tensor): ``(K, L)`` bool, :func:`at_noise_level` per target layer.
        grad_peak (Tensor, optional): ``(K, )`` largest ``|gradient|`` of each box's target
            over all target layers; None for gradient-free methods.
    """
    reasons = []
    for k in range(layer_noise.shape[0]):
        peak = None if grad_peak is None else float(grad_peak[k])
        if peak == 0.0:
            reasons.append('zero gradient: its target\'s gradient underflowed to exactly 0 in '
                           'float32 (its score is saturated; target=\'logit\' avoids this)')
        elif peak is not None and peak < FLOAT32_TINY:
            reasons.append(f'subnormal gradient: its largest gradient, {peak:.1e}, is below '
                           f'float32\'s smallest normal number ({FLOAT32_TINY:.1e}), its digits '
                           f'lost to underflow (target=\'logit\' avoids this)')
        elif bool(layer_noise[k].all()):
            reasons.append(f'noise: on every target layer (the input, for D-RISE) its map '
                           f'varies by at most '
                           f'{NOISE_FACTOR:g} x float32 eps x the magnitude of the terms summed '
                           f'into it')
        else:
            reasons.append('')
    return reasons

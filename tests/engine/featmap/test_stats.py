"""Activation statistics (engine/featmap/stats.py) computed by hand on two 2x1x2 maps."""
import math

import numpy as np
import pytest
import torch

from mmyolo_vis_hooks.engine.featmap.stats import activation_stats


def test_mean_std_dead_share_by_hand():
    first = torch.tensor([[[1., 3.]], [[0., 0.]]])    # channel 1 never fires
    second = torch.tensor([[[5., 7.]], [[-1., 0.]]])
    stats = activation_stats([first, second])
    # values 1 3 0 0 5 7 -1 0: mean 15/8, mean of squares 85/8
    assert stats['mean'] == pytest.approx(15 / 8)
    assert stats['std'] == pytest.approx(math.sqrt(85 / 8 - (15 / 8)**2))
    assert stats['dead_ratio'] == 0.5
    assert sorted(stats['values'].tolist()) == [-1, 0, 0, 0, 1, 3, 5, 7]
    assert stats['values'].dtype == np.float32


def test_non_finite_values_are_left_out():
    maps = torch.tensor([[[1., float('nan')]], [[float('inf'), 3.]]])
    stats = activation_stats([maps])
    assert stats['mean'] == pytest.approx(2.0) and stats['std'] == pytest.approx(1.0)
    assert stats['dead_ratio'] == 0.0  # the Inf channel counts as alive, NaN is ignored
    with pytest.raises(ValueError, match='no finite activations'):
        activation_stats([torch.full((1, 2, 2), float('nan'))])


def test_histogram_sample_is_capped():
    maps = torch.arange(10, dtype=torch.float32).reshape(1, 1, 10)
    stats = activation_stats([maps], max_values=4)
    assert stats['values'].tolist() == [0, 3, 6, 9]  # every ceil(10 / 4) = 3rd value
    assert stats['mean'] == pytest.approx(4.5)  # the statistics use every value
    assert activation_stats([maps], dead_eps=9.0)['dead_ratio'] == 1.0

"""engine/core/cpus.py: the input layout the network gets (channels-last on the CPU only)."""
import torch

from mmyolo_vis_hooks.engine.core.cpus import in_network_layout, prefers_channels_last


def test_cpu_inputs_become_channels_last_with_the_same_values():
    x = torch.randn(2, 3, 8, 6)
    y = in_network_layout(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous(memory_format=torch.channels_last)  # the input is untouched
    assert torch.equal(x, y)
    assert prefers_channels_last(torch.device('cpu'))
    assert not prefers_channels_last(torch.device('cuda', 0))
    assert not prefers_channels_last('meta')

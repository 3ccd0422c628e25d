"""engine/core/devices.py: the default device, whether a helper thread has a core free beside
the model, and the input layout the network gets (channels-last on the CPU only)."""
import torch

from mmyolo_vis_hooks.engine.core import devices
from mmyolo_vis_hooks.engine.core.devices import in_network_layout, prefers_channels_last


def test_cpu_inputs_become_channels_last_with_the_same_values():
    x = torch.randn(2, 3, 8, 6)
    y = in_network_layout(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous(memory_format=torch.channels_last)  # the input is untouched
    assert torch.equal(x, y)
    assert prefers_channels_last(torch.device('cpu'))
    assert not prefers_channels_last(torch.device('cuda', 0))
    assert not prefers_channels_last('meta')


def test_no_device_means_cuda_where_available(monkeypatch):
    """Library entry points default to the machine's device, never a hard-coded cpu."""
    from mmyolo_vis_hooks.engine.core.devices import resolve_device
    from mmyolo_vis_hooks.runtime.distributed import init_distributed
    assert resolve_device('cpu') == 'cpu'
    assert resolve_device(torch.device('cuda', 1)) == 'cuda:1'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert resolve_device(None) == 'cuda:0'
    assert init_distributed('none').device == 'cuda:0'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert resolve_device(None) == 'cpu'
    assert init_distributed('none').device == 'cpu'


def test_helper_thread_only_when_a_core_is_free(monkeypatch):
    """The pipeline's default: on beside a model on a GPU or a forward on fewer threads than
    usable CPUs, off when torch's threads take every CPU."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(devices, 'usable_cpus', lambda: 4)
    try:
        torch.set_num_threads(4)
        assert not devices.core_free_beside(torch.device('cpu'))
        assert devices.core_free_beside(torch.device('cuda', 0))
        torch.set_num_threads(3)
        assert devices.core_free_beside(torch.device('cpu'))
    finally:
        torch.set_num_threads(threads)

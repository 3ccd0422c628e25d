"""engine/core/devices.py: the default device, whether a helper thread has a core free beside
the model, and the input layout the network gets (channels-last on the CPU only, and not for
models with mmcv's compiled ops)."""
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


def test_models_with_mmcv_ops_keep_contiguous_inputs():
    """mmcv's compiled ops read NCHW-contiguous memory whatever the strides: DeformConv2d
    refuses a channels-last input ("input must be contiguous", D-RISE on VFNet) and
    ModulatedDeformConv2d computes other values from one. A model holding either gets its
    inputs contiguous; one of plain torch layers still gets channels-last."""
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 5)
    modulated = ModulatedDeformConv2dPack(4, 4, 3, padding=1)
    torch.nn.init.normal_(modulated.conv_offset.weight, std=0.5)  # offsets that move
    with torch.no_grad():
        wrong = modulated(x.contiguous(memory_format=torch.channels_last))
        assert not torch.allclose(wrong, modulated(x), atol=1e-3)  # why the rule exists
    for op in (DeformConv2dPack(4, 4, 3, padding=1), modulated):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), op)
        assert not prefers_channels_last(torch.device('cpu'), model)
        y = in_network_layout(torch.randn(1, 3, 6, 5), model)
        assert y.is_contiguous() and not y.is_contiguous(memory_format=torch.channels_last)
    assert prefers_channels_last(torch.device('cpu'), torch.nn.Conv2d(3, 4, 1))


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

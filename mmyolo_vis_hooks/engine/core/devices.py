"""Where the work runs: the default device, how many CPUs this process has, whether torch
leaves one free for a helper thread, and the input layout the network runs fastest on."""
import os
from typing import Optional, Union

import torch


def default_device() -> str:
    """``cuda:0`` where CUDA is available, else ``cpu`` (MMYOLO's demos default to cuda:0)."""
    return 'cuda:0' if torch.cuda.is_available() else 'cpu'


def resolve_device(device: Optional[Union[str, torch.device]]) -> str:
    """``device`` as a string; None means :func:`default_device`."""
    return default_device() if device is None else str(device)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is
    none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def core_free_beside(device: torch.device) -> bool:
    """Whether a helper thread can run beside the model without taking a core from it: the
    model is not on the CPU, or torch's intra-op threads leave a usable CPU unused.

    Measured on 2 cores (``benchmarks/bench_large_image.py``): a helper beside a 2-thread
    forward made sliced inference 1.4x slower (two OpenMP teams on two cores); beside a
    1-thread forward it cost nothing.
    """
    return device.type != 'cpu' or torch.get_num_threads() < usable_cpus()


def reads_contiguous_memory(model: Optional[torch.nn.Module]) -> bool:
    """Whether ``model`` holds one of mmcv's compiled ops (``mmcv.ops``), which read their
    inputs as contiguous NCHW memory whatever the strides: on a channels-last input
    ``DeformConv2d`` raises ``input must be contiguous`` and ``ModulatedDeformConv2d``
    silently computes other values (a max difference of 1.03 on random inputs here)."""
    if model is None:
        return False
    return any(type(module).__module__.startswith('mmcv.ops') for module in model.modules())


def prefers_channels_last(device: torch.device,
                          model: Optional[torch.nn.Module] = None) -> bool:
    """Whether inputs go to the network in channels-last layout: on the CPU, where oneDNN's
    convolutions run faster on it (YOLOv5-n: sliced inference about 27%, D-RISE's masked
    batches 19%; ``benchmarks/``), unless ``model`` holds an op that reads contiguous memory
    (:func:`reads_contiguous_memory`). Only the input's layout changes, never the
    parameters'; outputs differ by float rounding."""
    return torch.device(device).type == 'cpu' and not reads_contiguous_memory(model)


def in_network_layout(inputs: torch.Tensor,
                      model: Optional[torch.nn.Module] = None) -> torch.Tensor:
    """``inputs`` (N, C, H, W) in the layout :func:`prefers_channels_last` chooses for its
    device and ``model`` (the same values)."""
    if prefers_channels_last(inputs.device, model):
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs

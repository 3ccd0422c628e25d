"""A guard that puts a model back exactly as it was after a visualization ran on it."""
import random
from contextlib import ExitStack, contextmanager
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn


@contextmanager
def preserved_modes(model: nn.Module, training: Optional[bool] = None) -> Iterator[nn.Module]:
    """Restores every submodule's train/eval flag on exit (not only the top module's, which
    is all ``model.train(was_training)`` would give back: a submodule kept in eval mode by
    its owner would come out in train mode).

    Args:
        model (nn.Module): The model.
        training (bool, optional): Set every submodule to this mode for the block (False:
            eval). Defaults to None (leave the modes as they are).
    """
    modes = [(m, m.training) for m in model.modules()]
    if training is not None:
        for module, _ in modes:
            module.training = training
    try:
        yield model
    finally:
        for module, was_training in modes:
            module.training = was_training


@contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Restores, on exit, everything a visualization could disturb.

    Restored: every module's train/eval mode, every parameter's ``requires_grad`` and ``.grad``
    (the same tensor object, or None), every buffer's values (BN running stats and counters),
    the grad-enabled flag, and the torch (CPU and CUDA), numpy and Python RNG states.
    Weights are not copied: visualizations never write to them.
    """
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grad_enabled = torch.is_grad_enabled()
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    np_rng = np.random.get_state()
    py_rng = random.getstate()
    try:
        with preserved_modes(model):
            yield model
    finally:
        for param, requires_grad, grad in params:
            param.requires_grad_(requires_grad)
            param.grad = grad
        with torch.no_grad():
            for buffer, saved in buffers:
                if not torch.equal(buffer, saved):
                    buffer.copy_(saved)
        torch.set_grad_enabled(grad_enabled)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)


@contextmanager
def checkpointing_off(model: nn.Module) -> Iterator[nn.Module]:
    """Turns activation checkpointing (the ``with_cp`` flag of MMDetection's and MMPretrain's
    ResNet, Swin, ConvNeXt ... blocks, read at every forward) off for the block and back on
    afterwards. Checkpointing recomputes activations during the backward pass instead of
    storing them: it changes no result, but ``torch.autograd.grad`` through it fails
    ("torch.utils.checkpoint is incompatible with .grad()"), which is what box CAMs take."""
    flagged = [m for m in model.modules() if getattr(m, 'with_cp', None) is True]
    for module in flagged:
        module.with_cp = False
    try:
        yield model
    finally:
        for module in flagged:
            module.with_cp = True


@contextmanager
def autocast_off(model: nn.Module) -> Iterator[nn.Module]:
    """Runs the block in float32 even inside an autocast region (``ValLoop(fp16=True)``,
    ``AmpOptimWrapper``'s training step, a user's ``torch.autocast``): autocast is switched
    off for the CPU and for the model's device type, and on exit torch puts the enclosing
    region's state back (enabled flag, dtype, cache). Visualizations explain in float32:
    a box CAM's gradients in float16/bfloat16 keep about 3 significant digits, and mmcv's
    CPU NMS refuses bfloat16 boxes. Parameters are never cast (autocast does not own them),
    and a GradScaler is never touched.

    Args:
        model (nn.Module): The model whose device type (from its first parameter) is
            covered besides the CPU.
    """
    device_types = {'cpu'}
    first = next(iter(model.parameters()), None)
    if first is not None:
        device_types.add(first.device.type)
    with ExitStack() as stack:
        for device_type in sorted(device_types):
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield model

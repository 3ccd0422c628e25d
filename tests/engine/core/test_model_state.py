"""The model-state guards (engine/core/model_state.py) on a small torch model: every
submodule's mode comes back (not only the top module's), and preserved_model_state restores
gradients, ``requires_grad``, buffers, the grad-enabled flag and every RNG; checkpointing_off
lets gradients be taken through MMDetection blocks built with ``with_cp=True``; autocast_off
runs a block in float32 inside an autocast region and puts the region back."""
import random

import numpy as np
import pytest
import torch
from torch import nn

from mmyolo_vis_hooks.engine.core.model_state import (autocast_off, checkpointing_off,
                                                      preserved_model_state, preserved_modes)


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                          nn.Sequential(nn.ReLU(), nn.Dropout(0.5)))
    model[2][1].eval()  # a submodule its owner keeps in eval mode
    return model


def _modes(model):
    return [m.training for m in model.modules()]


def test_preserved_modes_restores_every_submodule():
    model = _model()
    before = _modes(model)
    assert before == [True, True, True, True, True, False]
    with preserved_modes(model, training=False):
        assert not any(_modes(model))
    assert _modes(model) == before
    with preserved_modes(model, training=True):
        assert all(_modes(model))
    assert _modes(model) == before
    with preserved_modes(model):  # no change asked: modes untouched inside too
        assert _modes(model) == before
        model.eval()
    assert _modes(model) == before
    # what model.train(was_training) alone would give back: the eval submodule in train mode
    model.eval()
    model.train(True)
    assert _modes(model) != before


def test_preserved_modes_restores_after_an_error():
    model = _model()
    before = _modes(model)
    with pytest.raises(RuntimeError, match='boom'):
        with preserved_modes(model, training=False):
            raise RuntimeError('boom')
    assert _modes(model) == before


def test_preserved_model_state_restores_grads_buffers_flags_and_rngs():
    model = _model()
    conv = model[0]
    grad = torch.ones_like(conv.weight)
    conv.weight.grad = grad
    model[1].bias.requires_grad_(False)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)

    with preserved_model_state(model):
        model.train()
        model(torch.randn(2, 3, 8, 8)).sum().backward()  # BN stats move, grads accumulate
        conv.weight.grad = None
        model[1].bias.requires_grad_(True)
        conv.bias.requires_grad_(False)
        torch.set_grad_enabled(False)
        np.random.rand(5)
        random.random()
        assert not torch.equal(model[1].running_mean, buffers['1.running_mean'])

    assert torch.is_grad_enabled()
    assert conv.weight.grad is grad  # the same tensor object
    assert conv.bias.grad is None and model[1].weight.grad is None
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    assert int(model[1].num_batches_tracked) == 0
    assert _modes(model) == [True, True, True, True, True, False]
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0])
    assert np.array_equal(after[1], expected[1]) and after[2] == expected[2]


def test_preserved_model_state_restores_after_an_error():
    model = _model()
    mean = model[1].running_mean.clone()
    with pytest.raises(ValueError):
        with preserved_model_state(model):
            with torch.no_grad():
                model[1].running_mean.add_(5)
            model.eval()
            raise ValueError('drawing failed')
    assert torch.equal(model[1].running_mean, mean)
    assert _modes(model) == [True, True, True, True, True, False]


def test_checkpointing_off_lets_autograd_grad_through_with_cp_blocks():
    """mmdet's ResNet-18 built with ``with_cp=True`` (as some packaged configs set it):
    ``torch.autograd.grad`` on an inner activation fails through activation checkpointing;
    inside the guard it works, and the flags come back."""
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    model = ResNet(depth=18, with_cp=True, out_indices=(3, ))
    model.eval()  # mmdet's ResNet.train() returns None

    def grad_of_first_stage():
        captured = []
        handle = model.layer1.register_forward_hook(lambda m, a, out: captured.append(out))
        try:
            with torch.enable_grad():
                out = model(torch.rand(1, 3, 64, 64))[-1]
                return torch.autograd.grad(out.sum(), captured[0])[0]
        finally:
            handle.remove()

    with pytest.raises(RuntimeError, match='checkpoint'):
        grad_of_first_stage()
    with checkpointing_off(model):
        assert grad_of_first_stage().abs().sum() > 0
    assert all(block.with_cp for block in model.layer1)


def _autocast_state() -> tuple:
    return (torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'),
            torch.is_autocast_cache_enabled())


def test_autocast_off_runs_in_float32_and_puts_the_region_back():
    layer = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    state = _autocast_state
    outside = state()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # the region is really on
        inside = state()
        with autocast_off(layer):
            assert layer(x).dtype == torch.float32
            assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        assert state() == inside and layer(x).dtype == torch.bfloat16
    with autocast_off(layer):
        assert layer(x).dtype == torch.float32
    assert state() == outside
    assert layer.weight.dtype == torch.float32

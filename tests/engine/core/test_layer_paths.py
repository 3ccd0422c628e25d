"""Layer paths (engine/core/layers.py) on a small torch model: parsing (never eval), resolving
to modules, nearest-name errors, canonical names, output keys and descriptions."""
import pytest
import torch
from torch import nn

from mmyolo_vis_hooks.engine.core.layers import (canonical_name, describe_output,
                                                 flatten_output, layer_names, output_key,
                                                 resolve_layer)


class _Neck(nn.Module):
    def __init__(self):
        super().__init__()
        self.out_layers = nn.ModuleList([nn.Conv2d(2, 2, 1) for _ in range(3)])


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Sequential(nn.Conv2d(2, 2, 1),
                                                                        nn.ReLU()))
        self.neck = _Neck()
        self.head = nn.ModuleDict({'cls': nn.Conv2d(2, 1, 1)})


@pytest.fixture(scope='module')
def net():
    return _Net()


@pytest.mark.parametrize('path, target', [
    ('neck', lambda n: n.neck),
    ('neck.out_layers[2]', lambda n: n.neck.out_layers[2]),
    ('neck.out_layers.2', lambda n: n.neck.out_layers[2]),       # named_modules form
    ('neck.out_layers[-1]', lambda n: n.neck.out_layers[2]),     # negative index
    ('backbone[1][0]', lambda n: n.backbone[1][0]),
    ('backbone.1.1', lambda n: n.backbone[1][1]),
    ('head.cls', lambda n: n.head['cls']),
    ('  neck.out_layers[0] ', lambda n: n.neck.out_layers[0]),  # surrounding spaces
])
def test_resolve_layer(net, path, target):
    assert resolve_layer(net, path) is target(net)


@pytest.mark.parametrize('path, message', [
    ('neck.out_layer[2]', r"unknown layer 'neck\.out_layer\[2\]' in _Net; nearest valid "
     r'layers: .*neck\.out_layers\[2\]'),
    ('neck.out_layers[3]', r"unknown layer 'neck\.out_layers\[3\]'.*nearest valid layers: "
     r'.*neck\.out_layers\[2\]'),
    ('backbone[1][5]', r"unknown layer 'backbone\[1\]\[5\]'.*backbone\[1\]\[0\]"),
    ('neck.2', r"unknown layer 'neck\.2'"),  # an index into a module that is no list
    ('zzzz', r"nearest valid layers: backbone, neck, head\. Use --preview-model"),
    ('neck..out_layers', r"layer path 'neck\.\.out_layers' has an empty segment; expected "
     r'dotted names with optional \[index\], e\.g\. "neck\.out_layers\[2\]"'),
    ('neck[a]', r"cannot parse layer path 'neck\[a\]' at '\[a\]'"),
    ('neck.out_layers[2]x', r"cannot parse layer path 'neck\.out_layers\[2\]x' at 'x'"),
    ('neck.out-layers', r"at '-layers'"),
    ('neck.__class__', r"unknown layer 'neck\.__class__'"),  # attributes are not layers
    ('', 'a layer path must be a non-empty string'),
])
def test_bad_paths_say_what_is_accepted(net, path, message):
    with pytest.raises(ValueError, match=message):
        resolve_layer(net, path)


@pytest.mark.parametrize('name, canonical', [
    ('neck.out_layers.2', 'neck.out_layers[2]'),
    ('backbone.1.0', 'backbone[1][0]'),
    ('backbone.stage4.1.conv', 'backbone.stage4[1].conv'),
    ('layer10.conv', 'layer10.conv'),
    ('blocks.12b', 'blocks.12b'),
    ('neck', 'neck'),
])
def test_canonical_name(name, canonical):
    assert canonical_name(name) == canonical


def test_layer_names_in_registration_order(net):
    assert layer_names(net) == [
        'backbone', 'backbone[0]', 'backbone[1]', 'backbone[1][0]', 'backbone[1][1]', 'neck',
        'neck.out_layers', 'neck.out_layers[0]', 'neck.out_layers[1]', 'neck.out_layers[2]',
        'head', 'head.cls']
    assert all(resolve_layer(net, name) is not None for name in layer_names(net))


@pytest.mark.parametrize('args, key', [
    (('neck', ), 'neck'),
    (('neck', 0, 1, 2, 3), 'neck[2]'),
    (('head.conv', 2, 3), 'head.conv@2'),
    (('split', 1, 2, 0, 2), 'split@1[0]'),
    (('split', 0, 1, 1, 2), 'split[1]'),
])
def test_output_key(args, key):
    assert output_key(*args) == key


def test_flatten_and_describe_outputs():
    t = torch.zeros(1, 16, 32, 32)
    assert flatten_output(t)[0] is t
    assert len(flatten_output((t, 'x', [t]))) == 1  # one level, tensors only
    assert flatten_output({'a': t}) == []
    assert describe_output(t) == 'Tensor[1, 16, 32, 32]'
    assert describe_output(([t] * 3, [t] * 3, [t] * 3)) == 'tuple(list[3], list[3], list[3])'
    assert describe_output([t] * 5) == ('list(Tensor[1, 16, 32, 32], Tensor[1, 16, 32, 32], '
                                        'Tensor[1, 16, 32, 32], Tensor[1, 16, 32, 32], ...)')
    assert describe_output({'a': t}) == 'dict' and describe_output(None) == 'NoneType'

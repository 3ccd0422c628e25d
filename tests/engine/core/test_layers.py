"""Activation capture of every call of a layer, on toy modules and on RTMDet, whose head applies
the same convolutions to every pyramid level (``share_conv=True``)."""
import pytest
import torch
from torch import nn

from helpers import packaged_config
from mmyolo_vis_hooks.engine.core.layers import (ActivationCapture, describe_layers,
                                                 join_tokens, output_key, split_tokens)
from mmyolo_vis_hooks.engine.featmap import probe_feature_layers

RTMDET = 'rtmdet/rtmdet_tiny_syncbn_fast_8xb32-300e_coco.py'
SHARED_CONV = 'bbox_head.head_module.cls_convs[0][0].conv'


class SharedConvPyramid(nn.Module):
    """One conv applied to three levels (like RTMDet's shared head convs), a module called
    once, and one called twice that returns a tuple."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Conv2d(2, 3, 3, padding=1)
        self.once = nn.Conv2d(2, 2, 1)
        self.split = _Split()

    def forward(self, x):
        levels = [self.once(x), x[..., ::2, ::2], x[..., ::4, ::4]]
        outs = [self.shared(level) for level in levels]
        self.split(outs[0])
        self.split(outs[1])
        return outs


class _Split(nn.Module):
    def forward(self, x):
        return x[:, :1], x[:, 1:]


def test_output_key_naming():
    assert output_key('neck') == 'neck'
    assert output_key('neck', index=2, num_outputs=3) == 'neck[2]'
    assert output_key('head.conv', call=1, num_calls=3) == 'head.conv@1'
    assert output_key('split', call=1, num_calls=2, index=0, num_outputs=2) == 'split@1[0]'


def test_every_call_is_captured_in_call_order():
    torch.manual_seed(0)
    model = SharedConvPyramid()
    x = torch.randn(2, 2, 16, 16)
    with ActivationCapture(model, ['shared', 'once', 'split']) as capture:
        outs = model(x)
    maps = capture.maps(batch_index=1)
    assert list(maps) == ['shared@0', 'shared@1', 'shared@2', 'once',
                          'split@0[0]', 'split@0[1]', 'split@1[0]', 'split@1[1]']
    for level, out in enumerate(outs):  # each call its own map, not the last one three times
        assert torch.equal(maps[f'shared@{level}'], out[1])
    assert maps['shared@2'].shape == (3, 4, 4)
    assert torch.equal(maps['split@1[1]'], outs[1][1, 1:])
    sources = {source.key: source for source, _ in capture.captured()}
    assert sources['split@1[0]'][1:] == ('split', 1, 2, 0, 2, None)
    assert capture.missing_maps() == {}


class TokenEncoder(nn.Module):
    """Flattens two levels into one token sequence, as a Deformable DETR does, then encodes."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 3)

    def forward(self, levels):
        return self.encoder(torch.cat([f.flatten(2).transpose(1, 2) for f in levels], 1))


def test_token_sequences_split_into_one_map_per_level():
    torch.manual_seed(0)
    levels = [torch.randn(2, 3, 4, 6), torch.randn(2, 3, 2, 3)]
    tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in levels], 1)
    maps = split_tokens(tokens, [(4, 6), (2, 3)])
    assert all(torch.equal(m, f) for m, f in zip(maps, levels))
    assert torch.equal(join_tokens(maps), tokens)
    assert split_tokens(tokens, [(4, 6)]) is None  # 24 of 30 tokens: not this layout
    assert split_tokens(levels[0], [(4, 6)]) is None  # a map is no token sequence
    model = TokenEncoder()
    with ActivationCapture(model, ['encoder']) as capture:
        capture.token_grids = ((4, 6), (2, 3))
        out = model(levels)
    assert list(capture.maps(1)) == ['encoder[0]', 'encoder[1]']
    assert torch.equal(capture.maps(1)['encoder[1]'], out[1, 24:].T.reshape(3, 2, 3))
    source = capture.captured()[1][0]
    assert (source.index, source.num_outputs, source.token_grids) == (1, 2, ((4, 6), (2, 3)))
    with ActivationCapture(model, ['encoder']) as capture:  # no grids: tokens give no map
        model(levels)
    assert 'not a 4-D' in capture.missing_maps()['encoder']


def test_calls_accumulate_until_cleared_and_disabled_forwards_pass():
    model = SharedConvPyramid()
    x = torch.randn(1, 2, 8, 8)
    with ActivationCapture(model, ['shared', 'shared']) as capture:  # a repeated path counts once
        model(x)
        assert [len(calls) for calls in capture.calls.values()] == [3]
        model(x)
        assert len(capture.calls['shared']) == 6  # two forwards: clear() between them
        capture.clear()
        capture.enabled = False
        model(x)
        assert capture.calls == {} and capture.maps() == {}
        capture.enabled = True
        model(x)
        assert list(capture.maps()) == ['shared@0', 'shared@1', 'shared@2']
    model(x)  # hooks removed on exit
    assert len(capture.calls['shared']) == 3


def test_layer_preview_lists_every_call():
    rows = {name: shape for name, _, shape, _ in describe_layers(SharedConvPyramid(),
                                                                   (1, 2, 8, 8))}
    assert rows['shared'] == '@0 1x3x8x8 | @1 1x3x4x4 | @2 1x3x2x2'
    assert rows['once'] == '1x2x8x8'
    assert rows['split'] == '@0 1x1x8x8, 1x2x8x8 | @1 1x1x4x4, 1x2x4x4'


@pytest.fixture(scope='module')
def rtmdet():
    from mmyolo_vis_hooks.runtime.models import build_detector
    torch.manual_seed(0)
    return build_detector(packaged_config(RTMDET)).eval()


@pytest.mark.slow  # builds RTMDet
def test_rtmdet_head_convs_are_shared_across_levels(rtmdet):
    """What the packaged config builds: per level its own ConvModule (own BN), all levels
    sharing the ConvModule's ``conv`` (RTMDetSepBNHeadModule with share_conv=True)."""
    head = rtmdet.bbox_head.head_module
    assert head.share_conv
    assert head.cls_convs[0][0] is not head.cls_convs[1][0]
    assert all(head.cls_convs[level][0].conv is head.cls_convs[0][0].conv for level in (1, 2))


@pytest.mark.slow  # builds RTMDet
def test_rtmdet_shared_conv_gives_one_map_per_level(rtmdet):
    """The probe (hook and tool) names every call; each call's map is that level's own
    convolution of the neck output (the last call alone would be level 2 three times)."""
    shapes = probe_feature_layers(rtmdet, [SHARED_CONV, 'bbox_head.head_module.cls_convs[0][0]'],
                                  'test', input_size=(64, 64))
    channels = rtmdet.bbox_head.head_module.feat_channels
    assert shapes == {f'{SHARED_CONV}@0': (channels, 8, 8), f'{SHARED_CONV}@1': (channels, 4, 4),
                      f'{SHARED_CONV}@2': (channels, 2, 2),
                      'bbox_head.head_module.cls_convs[0][0]': (channels, 8, 8)}
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with ActivationCapture(rtmdet, [SHARED_CONV]) as capture:
            feats = rtmdet.extract_feat(x)
            rtmdet.bbox_head(feats)
        maps = capture.maps()
        conv = rtmdet.bbox_head.head_module.cls_convs[0][0].conv
        assert len(maps) == len(feats) == 3
        for level, feat in enumerate(feats):
            assert torch.allclose(maps[f'{SHARED_CONV}@{level}'], conv(feat)[0])

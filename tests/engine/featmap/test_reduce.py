"""Channel reduction (engine/featmap/reduce.py) with mmengine's ``draw_featmap`` semantics, on
a 3-channel map whose sums are 4, 8 and -4."""
import pytest
import torch

from mmyolo_vis_hooks.engine.featmap.reduce import check_reduction, reduce_channels

FEATMAP = torch.stack([torch.ones(2, 2),                        # sum 4
                       torch.tensor([[0., 0.], [0., 8.]]),      # sum 8, one hot pixel
                       -torch.ones(2, 2)])                      # sum -4


def test_squeeze_mean_is_the_channel_mean():
    ((label, heat), ) = reduce_channels(FEATMAP, 'squeeze_mean')
    assert label == 'mean'
    assert torch.allclose(heat, torch.tensor([[0., 0.], [0., 8 / 3]]))


def test_select_max_takes_the_largest_sum_not_the_largest_pixel():
    ((label, heat), ) = reduce_channels(FEATMAP, 'select_max')
    assert label == 'channel: 1' and torch.equal(heat, FEATMAP[1])
    big_pixel = torch.stack([torch.tensor([[0., 0.], [0., 9.]]), torch.full((2, 2), 3.)])
    assert reduce_channels(big_pixel, 'select_max')[0][0] == 'channel: 1'  # sum 12 > 9


def test_topk_by_sum_in_order():
    maps = reduce_channels(FEATMAP, None, topk=2)
    assert [label for label, _ in maps] == ['channel: 1', 'channel: 0']
    assert torch.equal(maps[1][1], FEATMAP[0])
    assert [label for label, _ in reduce_channels(FEATMAP, None, topk=10)] == [
        'channel: 1', 'channel: 0', 'channel: 2']  # at most C


def test_no_reduction_shows_one_or_three_channels_as_they_are():
    ((label, image), ) = reduce_channels(FEATMAP, None, topk=-1)
    assert label == '' and torch.equal(image, FEATMAP)  # (3, H, W): an image
    ((_, heat), ) = reduce_channels(FEATMAP[:1], None, topk=0)
    assert heat.shape == (2, 2) and torch.equal(heat, FEATMAP[0])
    with pytest.raises(ValueError, match=r'the map has 2 channels; with channel_reduction=None'):
        reduce_channels(FEATMAP[:2], None, topk=-1)


def test_reduce_refuses_non_chw_and_computes_in_float32():
    with pytest.raises(ValueError, match=r'expected a \(C, H, W\) feature map, got shape '
                       r'\(1, 3, 2, 2\)'):
        reduce_channels(FEATMAP[None])
    ((_, heat), ) = reduce_channels(FEATMAP.half(), 'squeeze_mean')
    assert heat.dtype == torch.float32


@pytest.mark.parametrize('args, error, message', [
    (('max', 20, (4, 5)), ValueError,
     r"channel_reduction must be one of \('squeeze_mean', 'select_max', None\), got 'max'"),
    ((None, 0, (4, 5)), ValueError, r'topk must be a positive int or -1 \(no top-k\), got 0'),
    ((None, -2, (4, 5)), ValueError, 'topk must be a positive int or -1'),
    ((None, 1.5, (4, 5)), TypeError, 'topk must be a positive int or -1'),
    ((None, 4, 3), TypeError, r'arrangement must be \(rows, cols\) of positive ints, got 3'),
    ((None, 4, (2, 2, 1)), ValueError, r'arrangement must be \(rows, cols\)'),
    ((None, 4, (0, 2)), ValueError, r'arrangement must be \(rows, cols\) of positive ints'),
    ((None, 4, (2, 2.0)), TypeError, r'arrangement must be \(rows, cols\) of positive ints'),
    ((None, 5, (2, 2)), ValueError,
     r'arrangement \(2, 2\) has 4 cells, fewer than topk=5; use rows \* cols >= topk'),
])
def test_check_reduction_refuses(args, error, message):
    with pytest.raises(error, match=message):
        check_reduction(*args)


def test_check_reduction_accepts():
    check_reduction('select_max', 5, (2, 2))  # the arrangement only lays out top-k maps
    check_reduction(None, 4, [2, 2])
    check_reduction(None, -1, (1, 1))

"""Alignment (engine/core/geometry.py) on hand-made sample metadata: where the original image
lies in the network input (letterbox: ``scale_factor`` + ``pad_param``; resize: a scale per
axis), maps and boxes carried back, and the one ``box_iou`` (IoU and sahi's IOS).

The letterbox meta below: a 100x200 (h x w) image in a 320x320 input, scaled by 1.6 to 160x320
and padded by 80 rows above and below.
"""
import numpy as np
import pytest
import torch

from mmyolo_vis_hooks.engine.core.geometry import (box_iou, boxes_to_original, input_geometry,
                                                   map_to_original, original_size,
                                                   same_label_iou, stretch_to_original)

LETTERBOX = dict(ori_shape=(100, 200), img_shape=(320, 320), batch_input_shape=(320, 320),
                 scale_factor=(1.6, 1.6), pad_param=np.array([80., 80., 0., 0.]))
RESIZE = dict(ori_shape=(100, 200, 3), img_shape=(320, 320), scale_factor=(1.6, 3.2))


def _ramp(axis: int, size: int = 40) -> torch.Tensor:
    """A size x size map (stride 8 over the 320x320 input) whose value is its column (axis 1)
    or row (axis 0) index: bilinear sampling of it returns the sampled cell coordinate."""
    ramp = torch.arange(size, dtype=torch.float32)
    return ramp[None, :].expand(size, size) if axis == 1 else ramp[:, None].expand(size, size)


def test_original_size_reads_ori_shape_with_or_without_channels():
    assert original_size(dict(ori_shape=(100, 200))) == (100, 200)
    assert original_size(dict(ori_shape=[7, 9, 3])) == (7, 9)
    assert original_size(dict(ori_shape=np.array([5, 6]))) == (5, 6)
    with pytest.raises(ValueError, match='lacks ori_shape'):
        original_size(dict(img_shape=(320, 320)))


def test_input_geometry_of_letterbox_and_resize():
    assert input_geometry(LETTERBOX) == dict(scale_x=1.6, scale_y=1.6, left=0.0, top=80.0,
                                             in_h=320, in_w=320, ori_h=100, ori_w=200)
    resize = input_geometry(RESIZE)  # no pad_param, img_shape as the input size
    assert (resize['scale_x'], resize['scale_y'], resize['left'], resize['top']) == \
        (1.6, 3.2, 0.0, 0.0)
    # a scalar scale factor serves both axes; no scale_factor at all: 1
    assert input_geometry(dict(LETTERBOX, scale_factor=2.0))['scale_y'] == 2.0
    no_scale = {k: v for k, v in LETTERBOX.items() if k != 'scale_factor'}
    assert input_geometry(no_scale)['scale_x'] == 1.0
    with pytest.raises(ValueError, match="lacks 'scale_factor'"):
        input_geometry(dict(LETTERBOX, scale_factor=None))


def test_input_geometry_of_a_centernet_canvas():
    """MMDetection's RandomCenterCropPad (CenterNet's test pipeline) pastes the unscaled image
    into a canvas: ``border`` (top, bottom, left, right) says where; the content starts at
    (left, top), as the head subtracts ``border[[2, 0, 2, 0]]``."""
    meta = dict(ori_shape=(100, 200), img_shape=(256, 256), batch_input_shape=(256, 256),
                scale_factor=(1.0, 1.0), border=(78.0, 178.0, 28.0, 228.0))
    geometry = input_geometry(meta)
    assert (geometry['left'], geometry['top'], geometry['scale_x']) == (28.0, 78.0, 1.0)
    assert torch.allclose(boxes_to_original(torch.tensor([[38., 88., 58., 98.]]), meta),
                          torch.tensor([[10., 10., 30., 20.]]))


def test_boxes_to_original_inverts_the_letterbox():
    boxes = torch.tensor([[0., 80., 320., 240.],     # the whole content area
                          [16., 96., 48., 112.],     # 16/1.6 = 10, (96 - 80)/1.6 = 10, ...
                          [-10., 40., 330., 300.]])  # reaches into the padding: clamped
    out = boxes_to_original(boxes, LETTERBOX)
    assert torch.allclose(out, torch.tensor([[0., 0., 200., 100.], [10., 10., 30., 20.],
                                             [0., 0., 200., 100.]]))
    assert torch.allclose(boxes_to_original(torch.tensor([[16., 32., 48., 64.]]), RESIZE),
                          torch.tensor([[10., 10., 30., 20.]]))


def test_map_to_original_skips_the_padding():
    """Original pixel (y, x) has its centre at input (1.6 (x + .5), 1.6 (y + .5) + 80); a cell
    of the 40x40 map has its centre at input 8 (j + .5): the ramps sample 0.2 x - 0.4 (columns)
    and 0.2 y + 9.6 (rows), clamped to [0, 39] at the border."""
    cols = map_to_original(_ramp(1), LETTERBOX)
    rows = map_to_original(_ramp(0), LETTERBOX)
    assert cols.shape == rows.shape == (100, 200)
    assert cols[0, 50].item() == pytest.approx(0.2 * 50 + 0.1 - 0.5, abs=1e-4)  # 9.6
    assert cols[0, 100].item() == pytest.approx(19.6, abs=1e-4)
    assert cols[0, 0].item() == pytest.approx(0.0, abs=1e-6)     # -0.4: border
    assert cols[0, 199].item() == pytest.approx(39.0, abs=1e-4)  # 39.4: border
    assert rows[0, 7].item() == pytest.approx(9.6, abs=1e-4)     # below the 10 padded rows
    assert rows[99, 7].item() == pytest.approx(0.2 * 99 + 9.6, abs=1e-4)  # 29.4
    assert torch.allclose(rows[:, 0], rows[:, 123])  # a row ramp is constant along x
    # stretching the whole input (padding included) over the image starts at row 0 instead
    assert stretch_to_original(_ramp(0), LETTERBOX)[0, 7].item() < 1.0


def test_map_to_original_channels_and_smaller_output():
    maps = torch.stack([_ramp(1), 2 * _ramp(1)])
    out = map_to_original(maps, LETTERBOX, out_size=(50, 100))
    assert out.shape == (2, 50, 100)
    # output pixel k covers original x = 2k + 1 (its centre): 0.2 (2k + 1) - 0.5
    assert out[0, 3, 25].item() == pytest.approx(0.2 * 51 - 0.5, abs=1e-4)  # 9.7
    assert out[1, 3, 25].item() == pytest.approx(2 * 9.7, abs=1e-4)
    # resize meta: x scale 1.6, y scale 3.2, no padding
    rows = map_to_original(_ramp(0), RESIZE)
    assert rows[10, 0].item() == pytest.approx(3.2 * 10.5 / 8 - 0.5, abs=1e-4)  # 3.7


def test_box_iou_and_ios_by_hand():
    a = [[0, 0, 10, 10]]
    refs = [[5, 0, 15, 10],    # half of a: inter 50, union 150
            [2, 2, 4, 4],      # inside a: inter 4, smaller area 4
            [20, 20, 30, 30],  # disjoint
            [0, 0, 0, 10]]     # degenerate (zero area)
    iou = box_iou(a, refs)
    ios = box_iou(a, refs, 'ios')
    assert isinstance(iou, np.ndarray) and iou.dtype == np.float64 and iou.shape == (1, 4)
    assert iou[0].tolist() == pytest.approx([1 / 3, 0.04, 0.0, 0.0])
    assert ios[0].tolist() == pytest.approx([0.5, 1.0, 0.0, 0.0])
    assert box_iou(refs, refs).diagonal().tolist() == pytest.approx([1, 1, 1, 0])
    with pytest.raises(ValueError, match="metric must be 'iou' or 'ios', got 'giou'"):
        box_iou(a, refs, 'giou')


def test_same_label_iou_is_minus_one_across_classes():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10]]
    refs = [[5, 0, 15, 10], [0, 0, 10, 10]]
    got = same_label_iou(boxes, [0, 1], refs, [0, 0])
    np.testing.assert_allclose(got, [[50 / 150, 1.0], [-1.0, -1.0]])
    assert same_label_iou(np.zeros((0, 4)), [], refs, [0, 0]).shape == (0, 2)

def test_box_iou_on_tensors_keeps_batch_dims_and_gradients():
    boxes = torch.tensor([[[0., 0., 10., 10.], [0., 0., 20., 10.]],
                          [[5., 0., 15., 10.], [100., 100., 110., 110.]]], requires_grad=True)
    refs = torch.tensor([[0., 0., 10., 10.]])
    iou = box_iou(boxes, refs)
    assert isinstance(iou, torch.Tensor) and iou.shape == (2, 2, 1)
    assert iou.flatten().tolist() == pytest.approx([1.0, 0.5, 1 / 3, 0.0])
    iou.sum().backward()
    assert boxes.grad is not None and boxes.grad.abs().sum() > 0

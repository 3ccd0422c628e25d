"""Drawing one layer's map with the predicted boxes: xyxy boxes and rotated ones (RTMDet-R
predicts ``(cx, cy, w, h, angle)``; they were once multiplied by a 4-column scale)."""
import numpy as np
import pytest
import torch

from mmyolo_vis_hooks.engine.featmap.capture import CapturedSample
from mmyolo_vis_hooks.engine.featmap.draw import draw_layer

META = dict(ori_shape=(200, 300), img_shape=(200, 300), scale_factor=(1.0, 1.0),
            batch_input_shape=(200, 300))


@pytest.mark.parametrize('boxes', [np.array([[40., 50., 120., 110.]], np.float32),
                                   np.array([[150., 100., 80., 40., 0.6]], np.float32)],
                         ids=['xyxy', 'rotated'])
def test_boxes_are_drawn_at_display_scale(boxes):
    pytest.importorskip('mmrotate') if boxes.shape[1] == 5 else None
    sample = CapturedSample(maps={}, meta=META, boxes=boxes, scores=np.array([0.9], np.float32),
                            labels=np.array([0]))
    image = np.zeros((100, 150, 3), np.uint8)  # shown at half size
    featmap = torch.zeros(4, 25, 38)
    plain = draw_layer(image, featmap, sample, 'squeeze_mean', 4, (1, 1), 0.0, score_thr=None)
    drawn = draw_layer(image, featmap, sample, 'squeeze_mean', 4, (1, 1), 0.0, score_thr=0.3)
    changed = np.argwhere((drawn != plain).any(axis=2))
    assert len(changed)
    # the box's lines lie within its display-scale extent (half the original pixels)
    if boxes.shape[1] == 4:
        x1, y1, x2, y2 = boxes[0] / 2
    else:
        cx, cy, w, h, _ = boxes[0] / 2
        x1, y1, x2, y2 = cx - 45, cy - 45, cx + 45, cy + 45  # around its corners
    lines = changed[changed[:, 0] > y1 + 2]  # below the caption
    assert lines[:, 1].min() >= x1 - 2 and lines[:, 1].max() <= x2 + 2
    assert lines[:, 0].max() <= y2 + 2

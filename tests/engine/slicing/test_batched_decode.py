"""The batched replacement of the head's per-image decoding (engine/slicing/predictor.py,
``batched_predict_by_feat``) gives the boxes, scores and labels of ``predict_by_feat`` exactly
(``torch.equal``, same order): on the trained demo detector's slices (fast route, letterboxed
down, padded; also with YOLOX's ``yolox_style`` rule), and on random-init YOLOv8 and RTMDet
heads (no objectness) with a low score threshold, multi-label on and off, a minimum box size
and soft-NMS. The NMS shortcut equals mmcv's ``batched_nms``."""
import copy

import numpy as np
import pytest
import torch

from mmyolo_vis_hooks.engine.slicing import BatchPredictor
from mmyolo_vis_hooks.engine.detectors.mmyolo_dense import (_nms_keep, batched_predict_by_feat,
                                                            has_standard_decoding)
from mmyolo_vis_hooks.runtime.images import read_rgb


def _assert_same_as_head(head, outs, metas, cfg):
    """batched_predict_by_feat == head.predict_by_feat, bit for bit; returns the box count."""
    ref = head.predict_by_feat(*outs, batch_img_metas=copy.deepcopy(metas),
                               cfg=copy.deepcopy(cfg), rescale=True)
    bboxes, scores, labels, counts = batched_predict_by_feat(
        head, *outs, batch_img_metas=copy.deepcopy(metas), cfg=copy.deepcopy(cfg))
    assert counts == [len(r) for r in ref]
    assert torch.equal(bboxes, torch.cat([r.bboxes for r in ref]))
    assert torch.equal(scores, torch.cat([r.scores for r in ref]))
    assert torch.equal(labels.long(), torch.cat([r.labels.long() for r in ref]))
    return sum(counts)


@pytest.mark.slow
@pytest.mark.parametrize('size', [320, 500, 200])
def test_demo_detector_slices(demo_detector, small_large_image, size):
    """The trained YOLOv5 on real slices: at the input size (no letterbox), shrunk (500 px:
    scale factor and padding) and padded (200 px); the tool's threshold, a low one, and
    YOLOX's decoding rule (no objectness pre-filter, no max_per_img)."""
    img = read_rgb(small_large_image[0])
    corners = [(0, 0), (480, 300), (200, 100), (680, 380)]
    crops = [np.ascontiguousarray(img[y:y + size, x:x + size]) for x, y in corners]
    predictor = BatchPredictor(demo_detector)
    head = demo_detector.bbox_head
    with predictor.guard():
        inputs, metas = predictor.preprocess(crops)
        outs = predictor.forward(inputs)
        boxes = 0
        for thr, extra in ((0.3, {}), (0.01, {}), (0.01, dict(yolox_style=True))):
            cfg = copy.deepcopy(head.test_cfg)
            cfg.update(score_thr=thr, **extra)
            boxes += _assert_same_as_head(head, outs, metas, cfg)
    assert boxes > 20  # a comparison of empty sets would prove nothing


@pytest.mark.slow
def test_predictor_decode_is_the_heads(demo_detector, small_large_image):
    """BatchPredictor.decode with and without the batched route: identical arrays."""
    img = read_rgb(small_large_image[0])
    crops = [np.ascontiguousarray(img[y:y + 320, x:x + 320]) for x, y in [(0, 0), (320, 320)]]
    fast, slow = BatchPredictor(demo_detector), BatchPredictor(demo_detector,
                                                               batched_decode=False)
    with fast.guard():
        inputs, metas = fast.preprocess(crops)
        outs = fast.forward(inputs)
        got = fast.decode(outs, copy.deepcopy(metas), 0.05)
        want = slow.decode(outs, copy.deepcopy(metas), 0.05)
    assert [len(d) for d in got] == [len(d) for d in want] and sum(map(len, got)) > 0
    for a, b in zip(got, want):
        assert np.array_equal(a.bboxes, b.bboxes) and np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.labels, b.labels)
    with pytest.raises(TypeError, match='batched_decode must be a bool'):
        BatchPredictor(demo_detector, batched_decode='yes')


def _family_outputs(family):
    """A random-init family model's head outputs on a seeded random batch of 4, and metas of
    images of different sizes, scales and paddings letterboxed into it."""
    from helpers.mmyolo_models import INPUT, random_model
    model = random_model(family)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.rand((4, ) + INPUT[1:], generator=generator) * 2 - 1
    with torch.no_grad():
        outs = model(inputs, mode='tensor')
    metas = []
    for k, (scale, pad) in enumerate([(1.0, (0, 0, 0, 0)), (0.5, (10, 10, 0, 0)),
                                      (1.6, (0, 0, 16, 16)), (0.8, (3, 5, 7, 9))]):
        h, w = (INPUT[2] - pad[0] - pad[1]) / scale, (INPUT[3] - pad[2] - pad[3]) / scale
        metas.append(dict(ori_shape=(int(h), int(w)), scale_factor=(scale, scale),
                          pad_param=np.array(pad, np.float32)))
    del metas[0]['pad_param']  # one image without letterbox padding
    return model, outs, metas


@pytest.mark.slow
@pytest.mark.parametrize('family', ['yolov8', 'rtmdet'])
def test_random_families(family):
    model, outs, metas = _family_outputs(family)
    head = model.bbox_head
    assert has_standard_decoding(head)
    boxes = 0
    for multi_label in (True, False):
        for extra in ({}, dict(min_bbox_size=4), dict(nms=dict(type='soft_nms',
                                                                iou_threshold=0.5))):
            cfg = copy.deepcopy(head.test_cfg)
            cfg.update(score_thr=0.01, multi_label=multi_label, **extra)
            boxes += _assert_same_as_head(head, outs, metas, cfg)
    assert boxes > 100


def test_heads_with_their_own_decoding_are_not_replaced():
    from mmyolo.models.dense_heads import RTMDetInsSepBNHead, YOLOv5Head
    assert has_standard_decoding(YOLOv5Head.__new__(YOLOv5Head))
    assert not has_standard_decoding(RTMDetInsSepBNHead.__new__(RTMDetInsSepBNHead))


@pytest.mark.parametrize('nms_cfg', [dict(type='nms', iou_threshold=0.5),
                                     dict(type='nms', iou_threshold=0.3, class_agnostic=True),
                                     dict(type='soft_nms', iou_threshold=0.5)])
def test_nms_shortcut_is_mmcv_batched_nms(nms_cfg):
    """Overlapping boxes of 3 classes, scores with ties: same kept indices, same scores."""
    from mmcv.ops import batched_nms
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=generator) * 200
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=generator) * 40], 1)
    scores = (torch.rand(300, generator=generator) * 20).round() / 20  # many ties
    labels = torch.randint(0, 3, (300, ), generator=generator)
    keep, kept_scores = _nms_keep(boxes, scores, labels, nms_cfg)
    dets, ref_keep = batched_nms(boxes, scores, labels, nms_cfg)
    assert 0 < len(keep) < 300
    assert torch.equal(keep, ref_keep) and torch.equal(kept_scores, dets[:, -1])

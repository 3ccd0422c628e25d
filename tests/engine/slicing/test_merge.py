"""Merging the boxes of overlapping slices (engine/slicing/merge.py): the same boxes as sahi's
own postprocess classes, class-agnostic merging, soft-NMS, settings checks, and small cases
computed by hand."""
import numpy as np
import pytest

from mmyolo_vis_hooks.engine.slicing import Detections, MergeConfig, merge_detections
from helpers.slicing import same_detections as _same


@pytest.mark.parametrize('kwargs, message', [
    (dict(method='wbf'), 'merge method must be one of'),
    (dict(metric='GIOU'), 'merge metric must be one of'),
    (dict(method='soft_nms', metric='IOS'), 'soft_nms matches by IOU only'),
    (dict(threshold=1.2), r'merge threshold must be a number in \[0, 1\]'),
])
def test_bad_merge_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MergeConfig(**kwargs)


def _random_dets(rng, n=60, classes=3):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(10, 40, (n, 2))
    return Detections(np.c_[xy, xy + wh], rng.uniform(0.3, 1, n), rng.integers(0, classes, n))


@pytest.mark.parametrize('method', ['nms', 'nmm', 'greedynmm'])
@pytest.mark.parametrize('metric', ['IOU', 'IOS'])
@pytest.mark.parametrize('agnostic', [False, True])
def test_merge_equals_sahi_postprocess(method, metric, agnostic):
    from sahi.predict import POSTPROCESS_NAME_TO_CLASS
    from sahi.prediction import ObjectPrediction
    dets = _random_dets(np.random.default_rng(1))
    merge = MergeConfig(method, metric, 0.3, agnostic)
    preds = [ObjectPrediction(bbox=b.tolist(), category_id=int(lab), category_name=str(lab),
                              score=float(s)) for b, s, lab in zip(dets.bboxes, dets.scores,
                                                                   dets.labels)]
    post = POSTPROCESS_NAME_TO_CLASS[merge.sahi_postprocess_type](
        match_threshold=0.3, match_metric=metric, class_agnostic=agnostic)(preds)
    expected = Detections(np.array([p.bbox.to_xyxy() for p in post]),
                          np.array([p.score.value for p in post]),
                          np.array([p.category.id for p in post]))
    ours = merge_detections(dets, merge)
    assert 0 < len(ours) < len(dets)
    assert _same(ours, expected, atol=1e-4)


def test_class_agnostic_merge_keeps_one_box_per_object():
    box = [100, 100, 130, 128]
    dets = Detections([box, [101, 99, 131, 128], [99, 101, 129, 129], [300, 300, 320, 320]],
                      [0.9, 0.6, 0.5, 0.8], [1, 2, 0, 1])
    classwise = merge_detections(dets, MergeConfig('nms', 'IOU', 0.25, class_agnostic=False))
    agnostic = merge_detections(dets, MergeConfig('nms', 'IOU', 0.25, class_agnostic=True))
    assert len(classwise) == 4  # the same shape three times, under three labels
    assert len(agnostic) == 2 and agnostic.labels.tolist() == [1, 1]
    merged = merge_detections(dets, MergeConfig('greedynmm', 'IOS', 0.5, class_agnostic=True))
    assert merged.bboxes[0].tolist() == [99, 99, 131, 129] and merged.labels[0] == 1


def test_soft_nms_decays_overlapping_boxes():
    dets = Detections([[0, 0, 30, 30], [1, 1, 31, 31], [100, 100, 120, 120]], [0.9, 0.8, 0.7],
                      [0, 0, 1])
    out = merge_detections(dets, MergeConfig('soft_nms', 'IOU', 0.3))
    assert len(out) == 3 and out.scores[0] == pytest.approx(0.9)
    decayed = out.scores[np.argmin(np.abs(out.bboxes[:, 0] - 1))]
    assert decayed < 0.8 * 0.2  # linear decay by (1 - IoU), IoU ~0.88
    assert merge_detections(Detections.empty(), MergeConfig('soft_nms')).bboxes.shape == (0, 4)


# --------------------------------------------------------------------------- by hand

A = [0, 0, 10, 10]
B = [1, 0, 11, 10]    # IoU with A: 90 / 110
C = [5, 0, 20, 10]    # with A: IoU 50 / 200 = 0.25, IOS 50 / 100 = 0.5
D = [20, 20, 30, 30]  # apart


def test_nms_by_hand_keeps_other_labels():
    dets = Detections([A, B, B, D], [0.9, 0.8, 0.7, 0.6], [0, 0, 1, 0])
    out = merge_detections(dets, MergeConfig('nms', 'IOU', 0.5))
    assert out.bboxes.tolist() == [A, B, D] and out.labels.tolist() == [0, 1, 0]
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    agnostic = merge_detections(dets, MergeConfig('nms', 'IOU', 0.5, class_agnostic=True))
    assert agnostic.bboxes.tolist() == [A, D]
    # 0.818 < 0.85: nothing suppressed, all sorted by score
    assert len(merge_detections(dets, MergeConfig('nms', 'IOU', 0.85))) == 4


def test_greedy_nmm_unites_boxes_by_ios():
    dets = Detections([A, C], [0.9, 0.5], [0, 1])
    by_ios = merge_detections(dets, MergeConfig('greedynmm', 'IOS', 0.5, class_agnostic=True))
    assert by_ios.bboxes.tolist() == [[0, 0, 20, 10]]  # the union
    assert by_ios.scores.tolist() == pytest.approx([0.9]) and by_ios.labels.tolist() == [0]
    by_iou = merge_detections(dets, MergeConfig('greedynmm', 'IOU', 0.5, class_agnostic=True))
    assert len(by_iou) == 2  # IoU 0.25: kept apart
    classwise = merge_detections(dets, MergeConfig('greedynmm', 'IOS', 0.5))
    assert len(classwise) == 2  # different labels never merge class-wise
    # the label of the higher-scored box, the higher score
    swapped = merge_detections(Detections([A, C], [0.5, 0.95], [0, 1]),
                               MergeConfig('nmm', 'IOS', 0.5, class_agnostic=True))
    assert swapped.bboxes.tolist() == [[0, 0, 20, 10]] and swapped.labels.tolist() == [1]
    assert swapped.scores.tolist() == pytest.approx([0.95])


def test_soft_nms_linear_decay_by_hand():
    out = merge_detections(Detections([A, B, D], [0.9, 0.8, 0.7], [0, 0, 0]),
                           MergeConfig('soft_nms', 'IOU', 0.3))
    assert out.bboxes.tolist() == [A, D, B]  # sorted by the decayed scores
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.8 * (1 - 90 / 110)], abs=1e-5)


def test_merge_config_normalises_names_and_refuses_bad_values():
    config = MergeConfig('GREEDY_NMM', 'ios', 1)
    assert (config.method, config.metric, config.threshold) == ('greedynmm', 'IOS', 1.0)
    assert isinstance(config.threshold, float) and config.sahi_postprocess_type == 'GREEDYNMM'
    assert MergeConfig('soft-nms').method == 'soft_nms'
    with pytest.raises(ValueError, match='sahi has no soft_nms postprocess'):
        MergeConfig('soft_nms').sahi_postprocess_type
    for threshold, error in ((True, TypeError), ('0.5', TypeError), (-0.1, ValueError),
                             (1.5, ValueError)):
        with pytest.raises(error, match=r'merge threshold must be a number in \[0, 1\], got'):
            MergeConfig(threshold=threshold)


def test_detections_container():
    dets = Detections([A, B], [0.9, 0.8], [0, 2])
    assert dets.bboxes.dtype == np.float32 and dets.labels.dtype == np.int64
    assert dets.as_array().tolist() == [[0, 0, 10, 10, pytest.approx(0.9), 0],
                                        [1, 0, 11, 10, pytest.approx(0.8), 2]]
    assert dets.shifted(100, 50).bboxes.tolist() == [[100, 50, 110, 60], [101, 50, 111, 60]]
    assert len(Detections.concat([dets, Detections.empty(), dets])) == 4
    assert len(Detections.concat([])) == 0 and Detections.empty().bboxes.shape == (0, 4)
    assert dets.select(np.array([False, True])).labels.tolist() == [2]
    with pytest.raises(ValueError, match='bboxes, scores and labels differ in length: 2, 1, 2'):
        Detections([A, B], [0.9], [0, 1])

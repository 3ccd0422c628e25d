"""Sliced inference of rotated boxes: the container, the merge (mmcv's rotated NMS, the only
merge that keeps a rotated box a rotated box), the COCO export with ``rbox`` and COCO mAP by
rotated IoU."""
import json

import numpy as np
import pytest

pytest.importorskip('mmrotate', reason='rotated boxes need mmrotate 1.x')

from mmyolo_vis_hooks.engine.core.geometry import box_iou  # noqa: E402
from mmyolo_vis_hooks.engine.slicing import (Detections, MergeConfig,  # noqa: E402
                                             evaluate_coco, merge_detections)
from mmyolo_vis_hooks.engine.slicing.detections import (coco_document,  # noqa: E402
                                                        to_coco_annotations)
from mmyolo_vis_hooks.engine.slicing.merge import check_merge_for  # noqa: E402

# three objects; the first seen twice (two slices), slightly shifted
BOXES = np.array([[50., 40., 40., 20., 0.5], [52., 41., 40., 20., 0.52],
                  [150., 90., 30., 30., -0.3], [300., 200., 60., 16., 1.2]], np.float32)


def _dets(labels=(0, 0, 1, 0)) -> Detections:
    return Detections(BOXES, np.array([0.9, 0.8, 0.7, 0.6]), np.array(labels))


def test_rotated_detections_shift_scale_and_concatenate():
    dets = _dets()
    assert dets.rotated and dets.bboxes.shape == (4, 5)
    shifted = dets.shifted(100, 10)
    assert np.allclose(shifted.bboxes[:, :2], BOXES[:, :2] + [100, 10])
    assert np.array_equal(shifted.bboxes[:, 2:], BOXES[:, 2:])
    scaled = dets.scaled(0.5)
    assert np.allclose(scaled.bboxes[:, :4], BOXES[:, :4] / 2)
    assert np.array_equal(scaled.bboxes[:, 4], BOXES[:, 4])
    assert Detections.concat([dets, Detections.empty(5)]).bboxes.shape == (4, 5)
    with pytest.raises(ValueError, match='axis-aligned'):
        dets.as_array()


def test_rotated_merge_is_mmcvs_rotated_nms():
    """The duplicate goes (rotated IoU about 0.85), other boxes and labels stay; class-wise
    unless asked otherwise."""
    assert box_iou(BOXES[:1], BOXES[1:2])[0, 0] > 0.5
    merged = merge_detections(_dets(), MergeConfig(method='nms', threshold=0.5))
    assert merged.rotated and len(merged) == 3
    assert np.array_equal(merged.bboxes, BOXES[[0, 2, 3]])
    # the same two boxes with different labels stay class-wise, merge class-agnostic
    labels = (0, 1, 1, 0)
    assert len(merge_detections(_dets(labels), MergeConfig(threshold=0.5))) == 4
    assert len(merge_detections(_dets(labels), MergeConfig(threshold=0.5,
                                                           class_agnostic=True))) == 3
    assert merge_detections(Detections.empty(5), MergeConfig()).bboxes.shape == (0, 5)


@pytest.mark.parametrize('merge', [MergeConfig(method='nmm'), MergeConfig(method='soft_nms'),
                                   MergeConfig(method='nms', metric='IOS')])
def test_rotated_boxes_refuse_other_merges(merge):
    with pytest.raises(ValueError, match='rotated boxes merge by NMS on their rotated IoU'):
        check_merge_for(merge, 5)
    check_merge_for(merge, 4)  # axis-aligned boxes take them all


def test_rotated_coco_export_and_map_by_rotated_iou(tmp_path):
    gt_boxes = BOXES[[0, 2, 3]]
    gt_labels = [0, 1, 0]
    ground_truth = dict(
        images=[dict(id=1, file_name='big.png', width=400, height=300)],
        categories=[dict(id=1, name='a'), dict(id=2, name='b')],
        annotations=[dict(id=k + 1, image_id=1, category_id=label + 1, iscrowd=0,
                          bbox=[0, 0, 1, 1], area=float(box[2] * box[3]),
                          rbox=[float(v) for v in box])
                     for k, (box, label) in enumerate(zip(gt_boxes, gt_labels))])
    gt_file = tmp_path / 'gt.json'
    gt_file.write_text(json.dumps(ground_truth))
    exact = Detections(gt_boxes, [0.9, 0.8, 0.7], gt_labels)
    anns = to_coco_annotations(exact, 1)
    assert [len(a['rbox']) for a in anns] == [5, 5, 5]
    # the exported bbox is the axis-aligned box around the rotated one
    x, y, w, h = anns[2]['bbox']
    assert w > gt_boxes[2, 2] * np.cos(1.2) and h > gt_boxes[2, 2] * np.sin(1.2) - 1
    turned = gt_boxes.copy()
    turned[2, 4] += np.pi / 4  # the long thin box turned: rotated IoU ~0.2, a miss
    images = [dict(id=1, file_name='big.png')]
    runs = {'exact': coco_document(images, anns, ['a', 'b']),
            'turned': coco_document(images, to_coco_annotations(
                Detections(turned, [0.9, 0.8, 0.7], gt_labels), 1), ['a', 'b'])}
    result = evaluate_coco(str(gt_file), runs, ['a', 'b'])
    assert result.runs['exact'].mAP_50 == pytest.approx(1.0)
    assert result.runs['turned'].mAP_50 == pytest.approx(0.75, abs=0.01)  # class a: 1 of 2
    # axis-aligned ground truth cannot judge rotated detections
    for ann in ground_truth['annotations']:
        del ann['rbox']
    gt_file.write_text(json.dumps(ground_truth))
    with pytest.raises(ValueError, match='rotated detections need rotated ground truth'):
        evaluate_coco(str(gt_file), runs, ['a', 'b'])

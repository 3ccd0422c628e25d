"""The trained demo detector in ``tests/assets``: small, loads into fp32, detects the shapes.

Every test builds the detector."""
import os
import os.path as osp

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


def _box_iou(a, b):
    import torchvision
    return torchvision.ops.box_iou(torch.as_tensor(a, dtype=torch.float32).reshape(-1, 4),
                                   torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4))


def _recall(pred_boxes, pred_labels, gt_boxes, gt_labels, iou_thr=0.5):
    """Share of ground-truth boxes matched by a prediction of the same class at IoU >= thr."""
    if len(gt_boxes) == 0:
        raise ValueError('no ground truth')
    if len(pred_boxes) == 0:
        return 0.0
    iou = _box_iou(gt_boxes, pred_boxes)
    same = torch.as_tensor(gt_labels)[:, None] == torch.as_tensor(pred_labels)[None, :]
    return float(((iou >= iou_thr) & same).any(dim=1).float().mean())


def _xywh_to_xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]



def test_demo_checkpoint_is_small_and_loads_into_fp32(demo_config, demo_checkpoint):
    from mmyolo_vis_hooks.runtime.checkpoint import load_checkpoint_file
    from mmyolo_vis_hooks.runtime.models import build_detector
    assert os.path.getsize(demo_checkpoint) <= 4.2 * 1024 * 1024
    ckpt = load_checkpoint_file(demo_checkpoint)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == ('circle', 'square', 'triangle')
    model = build_detector(demo_config, demo_checkpoint)
    assert model.dataset_meta['classes'] == ckpt['meta']['dataset_meta']['classes']
    params = dict(model.state_dict())
    for key, value in ckpt['state_dict'].items():
        assert params[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(params[key], value.to(params[key].dtype))
    assert not model.training


def _detect(model, img_path, score_thr=0.3):
    from mmdet.apis import inference_detector
    pred = inference_detector(model, img_path).pred_instances
    keep = pred.scores >= score_thr
    return pred.bboxes[keep], pred.labels[keep]


def test_demo_checkpoint_detects_shapes(demo_config, demo_checkpoint, shapes_data):
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.runtime.models import build_detector
    model = build_detector(demo_config, demo_checkpoint)
    coco = COCO(osp.join(shapes_data, 'annotations', 'val.json'))
    recalls = []
    for img in coco.dataset['images']:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        boxes, labels = _detect(model, osp.join(shapes_data, 'val', img['file_name']))
        recalls.append(_recall(boxes, labels, [_xywh_to_xyxy(a['bbox']) for a in anns],
                               [a['category_id'] - 1 for a in anns]))
    assert np.mean(recalls) >= 0.8, recalls


def test_demo_checkpoint_detects_small_shapes_in_a_slice(demo_config, demo_checkpoint,
                                                         tmp_path):
    """A 320-px crop of a large-image-like scene (16-40 px shapes), seen at its own scale."""
    import cv2
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    from mmyolo_vis_hooks.runtime.models import build_detector
    ann_file = generate_large_image(str(tmp_path), seed=11, width=320, height=320,
                                    num_objects=12)
    coco = COCO(ann_file)
    anns = coco.dataset['annotations']
    model = build_detector(demo_config, demo_checkpoint)
    boxes, labels = _detect(model, osp.join(tmp_path, 'large_00000.png'))
    recall = _recall(boxes, labels, [_xywh_to_xyxy(a['bbox']) for a in anns],
                     [a['category_id'] - 1 for a in anns])
    assert recall >= 0.7, (recall, len(anns))
    assert cv2.imread(osp.join(tmp_path, 'large_00000.png')).shape[:2] == (320, 320)

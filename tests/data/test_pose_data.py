"""The pose demo data (``generate_pose_demo_data``): deterministic stick figures whose 17 COCO
keypoints lie in their boxes, a COCO keypoints file that mmpose's metainfo and MMYOLO's
``PoseCocoDataset`` read."""
import json
import os.path as osp

import numpy as np
import pytest


def _files(root):
    import glob
    import hashlib
    out = {}
    for path in sorted(glob.glob(osp.join(root, '**', '*'), recursive=True)):
        if osp.isfile(path):
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_pose_data_is_deterministic_coco_keypoints_inside_their_boxes(tmp_path):
    from mmyolo_vis_hooks.data.synthetic_shapes import (POSE_KEYPOINTS, POSE_SKELETON,
                                                        generate_pose_demo_data)
    a = generate_pose_demo_data(str(tmp_path / 'a'), seed=1, num_train=6, num_val=3)
    generate_pose_demo_data(str(tmp_path / 'b'), seed=1, num_train=6, num_val=3)
    assert _files(str(tmp_path / 'a')) == _files(str(tmp_path / 'b'))
    assert len(_files(str(tmp_path / 'a'))) == 6 + 3 + 2
    with open(a['train'], encoding='utf-8') as f:
        coco = json.load(f)
    (cat, ) = coco['categories']
    assert cat['name'] == 'person' and cat['keypoints'] == list(POSE_KEYPOINTS)
    assert len(cat['skeleton']) == len(POSE_SKELETON)
    sizes = {img['id']: (img['width'], img['height']) for img in coco['images']}
    per_image = {}
    for ann in coco['annotations']:
        per_image[ann['image_id']] = per_image.get(ann['image_id'], 0) + 1
        kpts = np.asarray(ann['keypoints']).reshape(17, 3)
        x, y, w, h = ann['bbox']
        assert ann['num_keypoints'] == 17 and (kpts[:, 2] == 2).all()
        assert ann['area'] == pytest.approx(w * h, rel=1e-3)
        assert (kpts[:, 0] >= x).all() and (kpts[:, 0] <= x + w).all()
        assert (kpts[:, 1] >= y).all() and (kpts[:, 1] <= y + h).all()
        width, height = sizes[ann['image_id']]
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
        assert 30 <= h <= 130  # 40-120 px tall figures, tilted up to 15 degrees
        # a frontal figure: the person's left (odd indices) on the image's right, head up
        left, right = kpts[5::2, 0], kpts[6::2, 0]
        assert (left[:1] > right[:1]).all()  # shoulders
        assert kpts[0, 1] < kpts[11, 1] < kpts[15, 1]  # nose above the hip above the ankle
    assert set(per_image.values()) <= {1, 2, 3} and len(per_image) == 6


def test_pose_data_is_read_by_mmyolos_pose_dataset(tmp_path):
    pytest.importorskip('mmpose')
    from mmyolo.datasets import PoseCocoDataset

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_pose_demo_data
    generate_pose_demo_data(str(tmp_path), seed=0, num_train=2, num_val=2)
    dataset = PoseCocoDataset(data_root=str(tmp_path), ann_file='annotations/val.json',
                              data_prefix=dict(img='val/'), data_mode='bottomup',
                              pipeline=[], test_mode=True)
    assert len(dataset) == 2
    item = dataset[0]
    assert item['keypoints'].shape[1:] == (17, 2)
    assert item['bbox'].shape == (item['keypoints'].shape[0], 4)
    assert list(dataset.metainfo['flip_indices']) == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11,
                                                      14, 13, 16, 15]

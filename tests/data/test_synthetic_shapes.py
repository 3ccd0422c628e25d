"""The demo data generator (data/synthetic_shapes.py): deterministic, valid COCO, images the
letterbox pads both ways, large images with small shapes."""
import glob
import hashlib
import os.path as osp

import numpy as np

from helpers import REPO_ROOT


def _tree_digest(root):
    """sha256 of every file under ``root`` keyed by relative path."""
    digests = {}
    for path in sorted(glob.glob(osp.join(root, '**', '*'), recursive=True)):
        if osp.isfile(path):
            with open(path, 'rb') as f:
                digests[osp.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests



def test_generator_is_deterministic(tmp_path):
    from mmyolo_vis_hooks.data.synthetic_shapes import SplitSpec, generate_split
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        generate_split(str(tmp_path / name), 'train', SplitSpec(5), seed=seed)
    first, same, other = (_tree_digest(str(tmp_path / n)) for n in 'abc')
    assert len(first) == 6  # 5 images + the annotation file
    assert first == same
    assert set(first) == set(other)
    differing = [k for k in first if first[k] != other[k]]
    assert len(differing) == len(first), f'seed 3 and 4 share files: {set(first) - set(differing)}'


def test_annotations_are_valid_coco_and_letterbox_pads(shapes_data):
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.data.synthetic_shapes import CLASSES
    coco = COCO(osp.join(shapes_data, 'annotations', 'train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    used = {a['category_id'] for a in coco.dataset['annotations']}
    assert len(used) >= 3
    for img in coco.dataset['images']:
        assert osp.isfile(osp.join(shapes_data, 'train', img['file_name']))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        assert anns, f'{img["file_name"]} has no objects'
        for ann in anns:
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0
            assert x + w <= img['width'] + 1e-6 and y + h <= img['height'] + 1e-6
    aspects = [img['width'] / img['height'] for img in coco.dataset['images']]
    assert min(aspects) < 0.9 and max(aspects) > 1.1

    # The real MMYOLO test pipeline of the demo config pads both wide and tall images.
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmyolo.registry import DATASETS
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'demo', 'yolov5_n_shapes.py'))
    init_default_scope('mmyolo')
    dataset_cfg = cfg.val_dataloader.dataset
    dataset_cfg.update(data_root=shapes_data, ann_file='annotations/train.json',
                       data_prefix=dict(img='train/'))
    dataset = DATASETS.build(dataset_cfg)
    pads = np.stack([dataset[i]['data_samples'].metainfo['pad_param']
                     for i in range(len(dataset))])
    assert (pads[:, :2].sum(axis=1) > 0).any(), 'no image padded at top/bottom'
    assert (pads[:, 2:].sum(axis=1) > 0).any(), 'no image padded left/right'


def test_large_image_has_small_shapes_inside(tmp_path):
    from pycocotools.coco import COCO

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    ann_file = generate_large_image(str(tmp_path), seed=1, width=640, height=480,
                                    num_objects=20)
    coco = COCO(ann_file)
    anns = coco.dataset['annotations']
    assert len(anns) >= 10
    for ann in anns:
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= 640 + 1e-6 and y + h <= 480 + 1e-6
        # object size 16-40 px: a rotated square's box reaches size * sqrt(2)
        assert 10 <= max(w, h) <= 40 * 2**0.5 + 1, ann
    assert osp.isfile(tmp_path / 'large_00000.png')

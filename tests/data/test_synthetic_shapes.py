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


def _dota_boxes(ann_dir, stem):
    """(corners (K, 4, 2), class names) of one DOTA txt file."""
    with open(osp.join(ann_dir, stem + '.txt'), encoding='utf-8') as f:
        rows = [line.split() for line in f if line.strip()]
    assert all(len(r) == 10 and r[9] == '0' for r in rows), rows
    corners = np.array([[float(v) for v in r[:8]] for r in rows]).reshape(-1, 4, 2)
    return corners, [r[8] for r in rows]


def test_rotated_demo_boxes_contain_their_shapes(tmp_path):
    """Every shape's DOTA box is a rectangle holding its polygon; for a shape wholly inside
    the image, a square's box is its drawn corners, a circle's the axis-aligned square on its
    radius, a triangle's lies flush with one of its sides."""
    import json

    import cv2

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_rotated_demo_data
    root = str(tmp_path / 'rot')
    paths = generate_rotated_demo_data(root, seed=0, num_train=6, num_val=4, large=False)
    assert sorted(paths) == ['train', 'val']
    seen, square_offsets = set(), []
    for split in ('train', 'val'):
        with open(osp.join(root, 'annotations', f'{split}.json'), encoding='utf-8') as f:
            coco = json.load(f)
        names = {c['id']: c['name'] for c in coco['categories']}
        for img in coco['images']:
            stem = osp.splitext(img['file_name'])[0]
            assert osp.isfile(osp.join(root, split, img['file_name']))
            corners, classes = _dota_boxes(paths[split], stem)
            anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
            assert classes == [names[a['category_id']] for a in anns]
            for box, name, ann in zip(corners, classes, anns):
                seen.add(name)
                polygon = np.array(ann['segmentation'][0]).reshape(-1, 2)
                sides = np.linalg.norm(box - np.roll(box, -1, axis=0), axis=1)
                diagonal = np.linalg.norm(box[0] - box[2])
                # a rectangle: opposite sides equal, Pythagoras on the diagonal
                assert np.allclose(sides[:2], sides[2:], atol=0.05)
                assert abs(diagonal**2 - sides[0]**2 - sides[1]**2) < 0.5 * diagonal
                contour = box.astype(np.float32).reshape(-1, 1, 2)
                inside = [cv2.pointPolygonTest(contour, tuple(map(float, p)), True)
                          for p in polygon]
                assert min(inside) >= -0.05, (name, min(inside))
                to_box = np.linalg.norm(polygon[:, None] - box[None], axis=2)
                # a shape cut by the image border keeps its visible (clipped) outline; the
                # exact checks are for whole shapes
                whole = (polygon > 0).all() and (polygon < [img['width'], img['height']]).all()
                if not whole:
                    continue
                if name == 'square':
                    # the drawn corners are rounded to pixels, so four of them are not quite a
                    # square: the smallest rectangle around them passes within about a pixel
                    assert len(polygon) == 4
                    assert to_box.min(axis=0).max() <= 1.5 and to_box.min(axis=1).max() <= 1.5
                    square_offsets.extend(to_box.min(axis=0))
                elif name == 'circle':  # axis-aligned, the radius on every side
                    (x1, y1), (x2, y2) = box.min(axis=0), box.max(axis=0)
                    assert np.allclose(np.sort(box[:, 0]), [x1, x1, x2, x2], atol=0.01)
                    assert np.allclose(np.sort(box[:, 1]), [y1, y1, y2, y2], atol=0.01)
                    assert abs((x2 - x1) - (y2 - y1)) < 0.02
                    assert np.allclose(polygon.min(axis=0), [x1, y1], atol=0.01)
                else:  # two vertices on one box side, the third on the opposite one
                    assert len(polygon) == 3
                    assert (to_box.min(axis=1) <= 0.01).sum() >= 2
                    assert max(inside) <= 0.05
    assert seen == {'circle', 'square', 'triangle'}
    assert np.median(square_offsets) <= 0.5, square_offsets
    # MMRotate's DOTA dataset reads the folders (classes by name, one instance per line)
    from mmrotate.datasets import DOTADataset
    dataset = DOTADataset(data_root=root + '/', ann_file='annfiles/val/',
                          data_prefix=dict(img_path='val/'), metainfo=dict(
                              classes=('circle', 'square', 'triangle')), test_mode=True,
                          lazy_init=False)
    assert len(dataset) == 4
    assert sum(len(dataset.get_data_info(i)['instances']) for i in range(4)) == \
        len([a for a in coco['annotations']])

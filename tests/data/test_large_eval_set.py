"""The sliced-evaluation set (``generate_large_eval_set``): deterministic, one COCO file for
all its images, small shapes inside each image."""
import json
import os.path as osp

from mmyolo_vis_hooks.data.synthetic_shapes import CLASSES, generate_large_eval_set


def test_large_eval_set_is_deterministic_with_small_shapes(tmp_path):
    images = [(500, 400, 12), (360, 420, 8)]  # the layout of the embedded set, smaller
    first = generate_large_eval_set(str(tmp_path / 'a'), seed=0, images=images)
    second = generate_large_eval_set(str(tmp_path / 'b'), seed=0, images=images)
    other_seed = generate_large_eval_set(str(tmp_path / 'c'), seed=1, images=images)
    with open(first, 'rb') as f:
        content = f.read()
    with open(second, 'rb') as f:
        assert f.read() == content
    for idx in range(len(images)):
        name = f'large_eval_{idx:05d}.png'
        with open(tmp_path / 'a' / name, 'rb') as f, open(tmp_path / 'b' / name, 'rb') as g:
            assert f.read() == g.read()
    with open(other_seed, 'rb') as f:
        assert f.read() != content

    coco = json.loads(content)
    assert [(im['id'], im['file_name'], im['width'], im['height']) for im in coco['images']] == [
        (1, 'large_eval_00000.png', 500, 400), (2, 'large_eval_00001.png', 360, 420)]
    assert [c['name'] for c in coco['categories']] == list(CLASSES)
    assert [a['id'] for a in coco['annotations']] == list(range(1, len(coco['annotations']) + 1))
    sizes = {im['id']: (im['width'], im['height']) for im in coco['images']}
    for image_id, (_, _, wanted) in enumerate(images, 1):
        anns = [a for a in coco['annotations'] if a['image_id'] == image_id]
        assert len(anns) >= wanted // 2  # rejection sampling may place fewer
        for ann in anns:
            x, y, w, h = ann['bbox']
            width, height = sizes[image_id]
            assert 0 <= x and 0 <= y and x + w <= width + 1e-6 and y + h <= height + 1e-6
            # shapes of 12-32 px: a rotated square's box reaches size * sqrt(2)
            assert 6 <= max(w, h) <= 32 * 2**0.5 + 1, ann
    assert osp.isfile(tmp_path / 'a' / 'large_eval_00001.png')

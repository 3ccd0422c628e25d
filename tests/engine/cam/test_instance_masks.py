"""Instance masks in the drawing and the measures, without a model: mask outlines, maps
normalised inside masks, the energy and pointing game on ground-truth masks, COCO
segmentations decoded (polygons, uncompressed and compressed RLE) and read from a COCO file,
and the generator's polygon segmentations on the shapes it draws."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from mmyolo_vis_hooks.engine.cam.compose import EPS, energy_inside, norm_in_mask
from mmyolo_vis_hooks.engine.cam.evaluation import coco_ground_truth
from mmyolo_vis_hooks.engine.cam.faithfulness import (energy_shares, ground_truth_scores,
                                                      pointing_hits)
from mmyolo_vis_hooks.engine.cam.draw import resize_masks
from mmyolo_vis_hooks.engine.core.geometry import segmentation_masks
from mmyolo_vis_hooks.engine.core.draw import draw_mask_outlines

CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _ring(height=40, width=50):
    """A rectangle with a rectangular hole."""
    mask = np.zeros((height, width), bool)
    mask[5:30, 8:40] = True
    mask[12:20, 15:25] = False
    return mask


def _boundary(mask):
    """Mask pixels with a 4-neighbour outside the mask (image borders count as outside)."""
    inner = cv2.erode(mask.astype(np.uint8), CROSS, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0)
    return mask & ~inner.astype(bool)


def test_mask_outlines_are_the_outer_and_hole_boundaries_on_a_copy():
    image = np.full((40, 50, 3), 7, np.uint8)
    ring = _ring()
    out = draw_mask_outlines(image, ring[None], color=(255, 0, 0))
    assert (image == 7).all()  # the input is untouched
    drawn = np.any(out != 7, axis=-1)
    assert np.array_equal(drawn, _boundary(ring))  # outer edge and the hole's edge
    assert (out[drawn] == (255, 0, 0)).all()
    assert drawn[12, 20] == 0 and drawn[11, 20]  # the hole's edge is on the mask side
    # Two instances: the union of both outlines, in white by default.
    other = np.zeros_like(ring)
    other[32:38, 2:6] = True
    both = draw_mask_outlines(image, np.stack([ring, other]))
    white = np.all(both == 255, axis=-1)
    assert np.array_equal(white, _boundary(ring) | _boundary(other))
    # No instance: an unchanged copy.
    assert np.array_equal(draw_mask_outlines(image, np.zeros((0, 40, 50), bool)), image)


def test_mask_outline_thickness_follows_the_image_size():
    image = np.zeros((800, 800, 3), np.uint8)
    mask = np.zeros((800, 800), bool)
    mask[200:600, 200:600] = True
    out = draw_mask_outlines(image, mask[None])
    assert np.all(out[400, 195:205] == 0, axis=-1).sum() < 10  # 2 px line (800 / 400) ...
    assert 2 <= np.any(out[400, 190:210] != 0, axis=-1).sum() <= 3  # ... around x = 200
    thin = draw_mask_outlines(image, mask[None], thickness=1)
    assert np.any(thin[400, 190:210] != 0, axis=-1).sum() == 1


@pytest.mark.parametrize('masks', [np.zeros((1, 40, 49), bool), np.zeros((40, 50), bool)])
def test_mask_outlines_refuse_masks_of_another_size(masks):
    with pytest.raises(ValueError, match=r'masks must be \(K, H, W\) with the image size '
                                         r'\(40, 50\)'):
        draw_mask_outlines(np.zeros((40, 50, 3), np.uint8), masks)


def test_norm_in_mask_rescales_inside_each_mask_and_zeroes_outside():
    maps = torch.randn(3, 40, 50, generator=torch.Generator().manual_seed(0))
    maps[0, 14, 18], maps[0, 16, 20] = 100.0, -100.0  # extremes in the ring's hole
    ring = torch.from_numpy(_ring())
    box = torch.zeros(40, 50, dtype=torch.bool)
    box[0:10, 0:10] = True
    masks = torch.stack([ring, box, torch.zeros_like(ring)])
    out = norm_in_mask(maps, masks)
    for k in (0, 1):
        inside = masks[k]
        values = maps[k][inside]
        expected = (values - values.min()) / (values.max() - values.min() + EPS)
        assert torch.allclose(out[k][inside], expected)
        assert float(out[k][inside].min()) == 0.0 and float(out[k][inside].max()) > 0.999
        assert not out[k][~inside].any()
    assert not out[2].any()  # an empty mask keeps no heat
    # The mask's own extremes, not those of its box (with the hole).
    ys, xs = torch.nonzero(ring, as_tuple=True)
    box_values = maps[0][ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    by_box = (maps[0][ring] - box_values.min()) / (box_values.max() - box_values.min())
    assert not torch.allclose(out[0][ring], by_box, atol=1e-3)


def test_energy_inside_masks_is_the_share_in_their_union():
    heat = torch.zeros(40, 50)
    heat[5:30, 8:40] = 1.0  # uniform over the ring's box, hole included
    heat[0, 0] = 10.0  # outside everything
    ring = torch.from_numpy(_ring())
    box = torch.tensor([[8., 5., 40., 30.]])
    total = float(heat.sum())
    in_box = energy_inside(heat, box)
    in_ring = energy_inside(heat, box, ring[None])
    assert in_box == pytest.approx(25 * 32 / total)
    assert in_ring == pytest.approx((25 * 32 - 8 * 10) / total)  # the hole is outside
    other = torch.zeros_like(ring)
    other[0, 0] = True
    assert energy_inside(heat, box, torch.stack([ring, other])) == pytest.approx(
        (25 * 32 - 80 + 10) / total)
    assert energy_inside(heat, box, torch.zeros(0, 40, 50, dtype=torch.bool)) == 0.0
    assert energy_inside(torch.zeros(40, 50), box, ring[None]) is None


def test_resize_masks_nearest_and_empty():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1, 2] = True
    masks[1] = True
    big = resize_masks(masks, (8, 8))
    assert big.dtype == torch.bool and big.shape == (2, 8, 8)
    assert big[0].sum() == 4 and big[0, 2:4, 4:6].all() and big[1].all()
    assert resize_masks(masks, (4, 4)).shape == (2, 4, 4)
    assert resize_masks(np.zeros((0, 4, 4), bool), (8, 6)).shape == (0, 8, 6)


def test_pointing_game_on_a_mask_measures_the_distance_to_the_mask():
    """The map's peak inside the ring's box but in its 8 x 10 hole: a hit for the box, and
    for the mask only within the tolerance of the hole's edge."""
    ring = torch.from_numpy(_ring())[None]
    box = torch.tensor([[8., 5., 40., 30.]])
    heat = torch.zeros(1, 40, 50)
    heat[0, 16, 20] = 1.0  # 4 px from the hole's top and bottom edges (rows 11 and 20)
    assert pointing_hits(heat, box, tolerance=0.0) == [True]
    assert pointing_hits(heat, box, tolerance=3.0, gt_masks=ring) == [False]
    assert pointing_hits(heat, box, tolerance=4.0, gt_masks=ring) == [True]
    assert pointing_hits(heat, box, tolerance=100.0,
                         gt_masks=torch.zeros_like(ring)) == [False]  # nothing to point at
    assert energy_shares(heat, box) == [1.0]
    assert energy_shares(heat, box, ring) == [0.0]


def test_ground_truth_scores_use_the_matched_objects_mask():
    ring = _ring()
    other = np.zeros_like(ring)
    other[32:38, 2:6] = True
    maps = torch.zeros(1, 40, 50)
    maps[0, 16, 20] = 1.0  # in the ring's hole
    detection = torch.tensor([[8., 5., 40., 30.]])
    gt_boxes = np.array([[2., 32., 6., 38.], [8., 5., 40., 30.]], np.float32)
    by_box = ground_truth_scores(maps, detection, [0], gt_boxes, [0, 0], tolerance=1.0)
    by_mask = ground_truth_scores(maps, detection, [0], gt_boxes, [0, 0], tolerance=1.0,
                                  gt_masks=np.stack([other, ring]))
    assert list(by_box.matched) == list(by_mask.matched) == [1]
    assert (by_box.pointing, by_box.energy) == ([1.0], [1.0])
    assert (by_mask.pointing, by_mask.energy) == ([0.0], [0.0])
    with pytest.raises(ValueError, match='gt_masks of size'):
        ground_truth_scores(maps, detection, [0], gt_boxes, [0, 0],
                            gt_masks=np.zeros((2, 20, 25), bool))


def _column_major_runs(mask):
    """COCO's uncompressed RLE counts of a mask (column-major runs, starting with 0s)."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_segmentation_masks_decode_polygons_and_both_rles():
    from pycocotools import mask as mask_utils
    height, width = 40, 50
    rect = np.zeros((height, width), bool)
    rect[10:20, 10:30] = True
    ring = _ring()
    compressed = mask_utils.encode(np.asfortranarray(ring.astype(np.uint8)))
    compressed['counts'] = compressed['counts'].decode()  # as a JSON file holds it
    segmentations = [
        [[10, 10, 30, 10, 30, 20, 10, 20]],  # one polygon
        [[10, 10, 30, 10, 30, 20, 10, 20], [40, 30, 45, 30, 45, 35, 40, 35]],  # two parts
        dict(counts=_column_major_runs(ring), size=[height, width]),  # uncompressed RLE
        compressed,  # compressed RLE
    ]
    masks = segmentation_masks(segmentations, height, width)
    assert masks.shape == (4, height, width) and masks.dtype == bool
    assert np.array_equal(masks[0], rect)
    second = rect.copy()
    second[30:35, 40:45] = True
    assert np.array_equal(masks[1], second)  # the union of its parts
    assert np.array_equal(masks[2], ring)
    assert np.array_equal(masks[3], ring)
    # Boxes only where any object lacks a segmentation; no object: no masks.
    assert segmentation_masks([segmentations[0], None], height, width) is None
    assert segmentation_masks([segmentations[0], []], height, width) is None
    assert segmentation_masks([], height, width).shape == (0, height, width)


def test_coco_ground_truth_reads_segmentations_of_the_generated_shapes(tmp_path):
    """``generate_split(segmentation=True)``: the same images as without; each object's mask
    lies in its box and covers pixels of one palette colour (the shape drawn there)."""
    from mmyolo_vis_hooks.data.synthetic_shapes import PALETTE, SplitSpec, generate_split
    with_masks = generate_split(str(tmp_path / 'a'), 'val', SplitSpec(3), seed=0,
                                segmentation=True)
    plain = generate_split(str(tmp_path / 'b'), 'val', SplitSpec(3), seed=0)
    paths, truths = coco_ground_truth(with_masks)
    plain_paths, plain_truths = coco_ground_truth(plain)
    palette = np.array(PALETTE)
    checked = 0
    for path, plain_path, truth, plain_truth in zip(paths, plain_paths, truths, plain_truths):
        assert open(path, 'rb').read() == open(plain_path, 'rb').read()
        assert np.array_equal(truth.boxes, plain_truth.boxes) and plain_truth.masks is None
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB).astype(int)
        assert truth.masks.shape == (len(truth.boxes), *rgb.shape[:2])
        for mask, box in zip(truth.masks, truth.boxes):
            ys, xs = np.nonzero(mask)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1
            assert ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1
            # Two pixels in from the outline (anti-aliased edges), one fill colour.
            core = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            colours = np.unique(rgb[core], axis=0)
            assert len(colours) == 1 and (palette == colours[0]).all(axis=1).any(), colours
            checked += 1
    assert checked >= 3
    with open(with_masks, encoding='utf-8') as f:
        ann = json.load(f)['annotations'][0]
    assert isinstance(ann['segmentation'], list) and len(ann['segmentation'][0]) >= 6
    assert osp.isfile(plain)

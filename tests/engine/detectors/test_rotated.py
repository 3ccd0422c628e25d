"""Rotated boxes behind the detector contract: MMYOLO's RTMDet-R (mmrotate 1.x).

Its detections are the head's own prediction (labels and scores bit for bit, the rotated boxes
moved to the original image as ``predict`` moves them), Grad-CAM per rotated box equals
pytorch-grad-cam's on the same candidate, every method runs and leaves the model alone; the
geometry every consumer uses (overlaps, masks, scaling, drawing) takes rotated boxes and
agrees with mmrotate's own."""
import os.path as osp

import numpy as np
import pytest
import torch

pytest.importorskip('mmrotate', reason='rotated boxes need mmrotate 1.x')

from helpers import REPO_ROOT  # noqa: E402
from helpers.mmdet_models import (assert_gradcam_equals_grad_cam,  # noqa: E402
                                  assert_methods_leave_the_model_alone)
from helpers.mmyolo_models import INPUT, random_model  # noqa: E402
from mmyolo_vis_hooks.engine.cam import METHODS  # noqa: E402
from mmyolo_vis_hooks.engine.cam.compose import box_masks, energy_inside  # noqa: E402
from mmyolo_vis_hooks.engine.core.draw import draw_boxes  # noqa: E402
from mmyolo_vis_hooks.engine.core.geometry import (box_iou, boxes_to_original,  # noqa: E402
                                                   scale_boxes)
from mmyolo_vis_hooks.engine.detectors import explainable_detector  # noqa: E402
from mmyolo_vis_hooks.engine.detectors.base import samples_of  # noqa: E402
from mmyolo_vis_hooks.engine.detectors.rotated import MMYOLORotatedDetector  # noqa: E402

# MMYOLO's letterbox: scale 0.5, 5 px of padding above the content
METAS = [dict(img_shape=(150, 192), ori_shape=(300, 384), scale_factor=(0.5, 0.5),
              batch_input_shape=INPUT[2:], pad_shape=INPUT[2:],
              pad_param=np.array([5., 5., 0., 0.], np.float32))] * INPUT[0]
SCORE_THR = 0.2  # rotated NMS is quadratic in the candidates above it (a few hundred here)


def _inputs(seed: int = 1) -> torch.Tensor:
    return torch.rand(INPUT, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _random_rotated_boxes(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([200., 150., 60., 40., 3.0])
    boxes = torch.rand((n, 5), generator=gen) * scale
    boxes[:, 2:4] += 4
    boxes[:, 4] -= 1.5
    return boxes


# ------------------------------------------------------------------ geometry (unit tier)
def test_rotated_iou_is_mmrotates_on_every_pair():
    """The pairs left out (circumscribed circles apart) are exactly those mmrotate gives 0."""
    from mmrotate.structures.bbox import rbbox_overlaps
    boxes, refs = _random_rotated_boxes(300, 0), _random_rotated_boxes(7, 1)
    ours = box_iou(boxes.reshape(3, 100, 5), refs)
    assert ours.shape == (3, 100, 7)
    theirs = rbbox_overlaps(boxes, refs)
    assert torch.allclose(ours.reshape(300, 7), theirs, atol=1e-6)
    assert (theirs > 0).sum() > 20 and (theirs == 0).sum() > 20
    # numpy in, numpy out; 'ios' = intersection over the smaller box
    ios = box_iou(boxes.numpy(), refs.numpy(), 'ios')
    inter = theirs * (boxes[:, None, 2] * boxes[:, None, 3] + refs[:, 2] * refs[:, 3]) \
        / (1 + theirs)
    smaller = torch.minimum(boxes[:, None, 2] * boxes[:, None, 3], refs[:, 2] * refs[:, 3])
    assert np.allclose(ios, (inter / smaller).numpy(), atol=1e-5)


def test_rotated_box_masks_are_the_rotated_rectangle():
    from mmrotate.structures.bbox import RotatedBoxes
    boxes = _random_rotated_boxes(6, 2)
    masks = box_masks(boxes, (160, 220))
    ys, xs = torch.meshgrid(torch.arange(160) + 0.5, torch.arange(220) + 0.5, indexing='ij')
    points = torch.stack([xs.ravel(), ys.ravel()], dim=1)
    strictly = RotatedBoxes(boxes).find_inside_points(points, eps=0.01).T.reshape(6, 160, 220)
    loosely = RotatedBoxes(boxes + torch.tensor([0, 0, 0.02, 0.02, 0])).find_inside_points(
        points, eps=0.0).T.reshape(6, 160, 220)
    assert (masks >= strictly).all() and (masks <= loosely).all()  # edges within 0.01 px
    # an unrotated box is its xyxy box
    upright = torch.tensor([[50., 40., 30., 20., 0.]])
    assert torch.equal(box_masks(upright, (100, 100)),
                       box_masks(torch.tensor([[35., 30., 65., 50.]]), (100, 100)))
    heat = torch.zeros(160, 220)
    heat[masks[0]] = 1.0
    assert energy_inside(heat, boxes[:1]) == pytest.approx(1.0)


def test_rotated_boxes_scale_and_move_as_mmrotate_does():
    from mmrotate.structures.bbox import RotatedBoxes
    boxes = _random_rotated_boxes(5, 3)
    theirs = RotatedBoxes(boxes.clone())
    theirs.translate_((-0.0, -5.0))
    theirs.rescale_((2.0, 2.0))
    assert torch.allclose(boxes_to_original(boxes, METAS[0]), theirs.tensor)
    # unequal scales: the box mmrotate defines; equal ones keep the angle and scale w, h
    scaled = scale_boxes(boxes, 0.5, 0.5)
    assert torch.allclose(scaled[:, :4], boxes[:, :4] * 0.5, atol=1e-5)
    assert torch.allclose(torch.remainder(scaled[:, 4] - boxes[:, 4] + 1, torch.pi), 1 +
                          torch.zeros(5), atol=1e-5)


def test_rotated_boxes_are_drawn_as_polygons():
    image = np.zeros((100, 100, 3), np.uint8)
    box = np.array([[50., 50., 60., 20., np.pi / 4]], np.float32)
    out = draw_boxes(image, box, [0], [0.9], ['a'], thickness=1, captions=False)
    drawn = out.any(axis=2)
    # a corner of the rotated box is drawn; the axis-aligned hull's corner is not
    corner = np.array([50 + 30 * np.cos(np.pi / 4) - 10 * np.sin(np.pi / 4),
                       50 + 30 * np.sin(np.pi / 4) + 10 * np.cos(np.pi / 4)])
    x, y = np.round(corner).astype(int)
    assert drawn[y - 1:y + 2, x - 1:x + 2].any()
    assert not drawn[20:26, 20:26].any() and not drawn[50, 50]


# ------------------------------------------------------------------ the kind (slow)
@pytest.mark.slow
def test_rotated_detections_are_the_heads_own_prediction():
    model = random_model('rtmdet_r')
    detector = explainable_detector(model)
    assert isinstance(detector, MMYOLORotatedDetector) and detector.box_dim == 5
    cfg = model.bbox_head.test_cfg.copy()
    cfg.update(score_thr=SCORE_THR)
    inputs = _inputs()
    with torch.no_grad():
        theirs = model.bbox_head.predict_by_feat(
            *model.bbox_head(model.extract_feat(inputs)), batch_img_metas=METAS, cfg=cfg,
            rescale=True)
        preds = detector.candidates(inputs, METAS)
        ours = detector.select(preds, SCORE_THR, cfg.max_per_img, METAS)
    for b, (det, ref) in enumerate(zip(ours, theirs)):
        assert len(det) == len(ref) > 5
        assert det.boxes.shape[1] == 5
        assert torch.equal(det.labels, ref.labels) and torch.equal(det.scores, ref.scores)
        assert torch.equal(preds.scores[b, det.priors, det.labels], det.scores)
        # predict rescales all candidates before its NMS; the transcendental ops of mmrotate's
        # rescale may round differently by position in a vector: 1e-5 px / rad
        assert torch.allclose(boxes_to_original(det.boxes, METAS[b]), ref.bboxes.tensor,
                              atol=1e-5)
    # through the whole model too (YOLODetector.predict with its own test config)
    with torch.no_grad():
        predicted = model.predict(inputs[:1], samples_of(METAS[:1]), rescale=True)[0]
    assert predicted.pred_instances.bboxes.shape[-1] == 5


@pytest.mark.slow
def test_rotated_gradcam_per_box_equals_grad_cam():
    assert_gradcam_equals_grad_cam(random_model('rtmdet_r'), _inputs(3)[:1],
                                   score_thr=SCORE_THR)


@pytest.mark.slow
def test_rotated_methods_leave_the_model_alone():
    """All 8 methods (D-RISE with rotated IoU, AblationCAM re-scoring by rotated IoU)."""
    assert_methods_leave_the_model_alone(random_model('rtmdet_r'), _inputs(5)[:1], METHODS,
                                         ratio_channels_to_ablate=0.05, num_masks=16,
                                         score_thr=SCORE_THR, metas=METAS[:1])


def test_rotated_detections_meet_axis_aligned_ground_truth_by_their_hull():
    """The faithfulness evaluation's ground truth is COCO (xyxy boxes, polygon masks): a
    rotated detection is matched by its axis-aligned hull, of its own class only."""
    from mmyolo_vis_hooks.engine.cam.faithfulness import match_ground_truth
    # a 40x40 square turned 45°: its hull is the 56.6-px square around the same centre
    dets = np.array([[100., 100., 40., 40., np.pi / 4], [300., 50., 30., 10., 0.3]])
    half = 20 * 2**0.5
    gt = np.array([[250., 20., 290., 60.], [100 - half, 100 - half, 100 + half, 100 + half]])
    assert match_ground_truth(dets, np.array([1, 0]), gt, np.array([0, 1])).tolist() == [1, -1]
    assert match_ground_truth(dets, np.array([0, 0]), gt, np.array([0, 1])).tolist() == [-1, -1]



def test_rotated_ground_truth_scores_by_rotated_iou_and_the_rotated_rectangle():
    """Rotated ground truth (DOTA's, as the hook reads it): detections are matched by rotated
    IoU, and the pointing game and the energy use the rotated rectangle, not its hull."""
    from mmyolo_vis_hooks.engine.cam.faithfulness import ground_truth_scores
    from mmyolo_vis_hooks.engine.core.geometry import quads_to_rotated
    # a 56.6 x 28.3 box at 45° around (100, 100): its hull's corners lie far outside it
    gt = quads_to_rotated(np.array([[90, 70, 130, 110, 110, 130, 70, 90]], np.float32))
    assert gt.shape == (1, 5) and gt[0, 2] * gt[0, 3] == pytest.approx(
        np.hypot(40, 40) * np.hypot(20, 20), rel=1e-4)
    turned = torch.tensor(gt, dtype=torch.float32)
    upright = turned.clone()
    upright[0, 4] += np.pi / 2  # the same centre and size, turned 90°: rotated IoU ~0.33
    maps = torch.zeros(2, 200, 200)
    maps[0, 100, 100] = 1.0  # peak at the centre: inside
    maps[1, 75, 75] = 1.0  # 7 px beyond the box's end: within the 15 px tolerance
    scores = ground_truth_scores(maps, torch.cat([turned, turned]), [0, 0], gt, [0])
    assert scores.matched.tolist() == [0, 0]
    assert scores.pointing == [1.0, 1.0] and scores.energy[0] == 1.0
    far = torch.zeros(1, 200, 200)
    far[0, 75, 125] = 1.0  # inside the hull, 21 px from the rotated box: a miss
    assert ground_truth_scores(far, turned, [0], gt, [0]).pointing == [0.0]
    assert ground_truth_scores(far, turned, [0], gt, [0]).energy == [0.0]
    assert ground_truth_scores(maps[:1], upright, [0], gt, [0]).matched.tolist() == [-1]


# ------------------------------------------------------------------ the trained RTMDet-R (slow)
# The small RTMDet-R trained on the rotated shapes data (tests/assets/README.md)
TRAINED = (osp.join(REPO_ROOT, 'configs', 'demo', 'rtmdet_r_shapes.py'),
           osp.join(REPO_ROOT, 'tests', 'assets', 'rtmdet_r_shapes.pth'))


@pytest.fixture(scope='module')
def trained_rotated(tmp_path_factory):
    """``(model, load_image, data_root)``: the trained RTMDet-R (eval mode, left as found by
    every test) and 8 generated val images with their DOTA boxes (seed 0: the first 8 images
    of its val split, which it was validated on, never trained on)."""
    from mmengine.registry import init_default_scope

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_rotated_demo_data
    from mmyolo_vis_hooks.runtime.models import build_detector, build_image_loader
    root = str(tmp_path_factory.mktemp('shapes_rotated'))
    generate_rotated_demo_data(root, seed=0, num_train=0, num_val=8, large=False)
    model = build_detector(*TRAINED, device='cpu')
    init_default_scope(model.cfg.default_scope)  # the test pipeline's registry
    return model, build_image_loader(model.cfg), root


def _dota_truth(root: str, stem: str, classes):
    """The rotated ground truth of one image: ``(boxes (G, 5), labels (G, ))``."""
    from mmrotate.structures.bbox import qbox2rbox
    with open(osp.join(root, 'annfiles', 'val', stem + '.txt'), encoding='utf-8') as f:
        rows = [line.split() for line in f if line.strip()]
    corners = torch.tensor([[float(v) for v in row[:8]] for row in rows])
    return qbox2rbox(corners), torch.tensor([classes.index(row[8]) for row in rows])


@pytest.mark.slow
def test_trained_rotated_detector_finds_the_shapes(trained_rotated):
    """On the 8 val images, nearly every shape is found by a box of its class with rotated
    IoU >= 0.5 (score >= 0.3) and few boxes are spurious (measured: 34 of 34 found, 1
    spurious). Rotated IoU >= 0.5 is lenient (an upright square on a square turned 45° has
    0.71), so the boxes' fit is asserted too: the median IoU of the found shapes (measured
    0.94; the worst are a square near 45° and triangles near the ±30° switch of their box,
    where the rotated box of the target jumps)."""
    model, load_image, root = trained_rotated
    classes = model.dataset_meta['classes']
    found, total, spurious, best_ious = 0, 0, 0, []
    for idx in range(8):
        gt_boxes, gt_labels = _dota_truth(root, f'val_{idx:05d}', classes)
        data = model.data_preprocessor(load_image(osp.join(root, 'val', f'val_{idx:05d}.png'),
                                                  idx), False)
        with torch.no_grad():
            pred = model.predict(data['inputs'], data['data_samples'])[0].pred_instances
        keep = pred.scores >= 0.3
        boxes = pred.bboxes[keep]
        boxes = getattr(boxes, 'tensor', boxes)  # RotatedBoxes
        assert boxes.shape[-1] == 5
        same = gt_labels[:, None] == pred.labels[keep][None]
        iou = torch.where(same, box_iou(gt_boxes, boxes), torch.zeros(()))
        hit = iou >= 0.5
        found += int(hit.any(1).sum())
        spurious += int((~hit.any(0)).sum())
        total += len(gt_boxes)
        best_ious += iou.max(1).values[hit.any(1)].tolist()
    assert found >= 0.9 * total, (found, total)
    assert spurious <= 0.1 * total, (spurious, total)
    assert np.median(best_ious) >= 0.85, sorted(best_ious)


@pytest.mark.slow
def test_trained_rotated_cams_are_faithful(trained_rotated):
    """mmyolo-boxam-eval's evaluation on two val images, the 3 best boxes of each, against
    the calibration rows (measured: deletion AUC GradCAM 0.191, LayerCAM 0.238, uniform
    0.593; LayerCAM's pointing game 1.00 (6 of 6) and energy in the ground-truth mask 0.83,
    the uniform map's 0.06). Both maps remove the box's evidence much faster than a uniform
    map; LayerCAM's peak falls on the matched shape's polygon. GradCAM's insertion AUC
    (0.634 vs 0.570) and pointing game (0.50: its global channel weights light up the other
    shapes of the class, docs/cams.md) are not asserted."""
    from mmyolo_vis_hooks.engine.cam.evaluation import (EvaluationOptions, coco_ground_truth,
                                                        evaluate_methods)
    model, load_image, root = trained_rotated
    paths, truth = coco_ground_truth(osp.join(root, 'annotations', 'val.json'),
                                     class_names=model.dataset_meta['classes'])
    assert all(gt.masks is not None for gt in truth[:2])
    report = evaluate_methods(
        model, paths[:2], ['gradcam', 'layercam'], load_image=load_image,
        ground_truth=truth[:2],
        options=EvaluationOptions(topk=3, steps=8, reference=True, eval_batch_size=8))
    uniform = report.summary['(uniform)']
    gradcam, layercam = report.summary['gradcam'], report.summary['layercam']
    # every explained box matches a ground-truth shape (by its axis-aligned hull)
    assert gradcam['boxes'] == layercam['boxes'] == 6, report.table()
    assert gradcam['gt_matched'] == layercam['gt_matched'] == 6, report.table()
    for ours in (gradcam, layercam):
        assert ours['deletion_auc_mean'] < uniform['deletion_auc_mean'] - 0.2, report.table()
    assert layercam['pointing_game_mean'] >= 0.8, report.table()
    assert layercam['energy_in_gt_mean'] > 0.5 > uniform['energy_in_gt_mean'], report.table()


@pytest.mark.slow
def test_sliced_rotated_detection_beats_the_whole_image(trained_rotated, tmp_path):
    """Sliced inference of the trained RTMDet-R on a large image of small rotated shapes
    (12-32 px; ground truth ``rbox``): slices merged by rotated NMS find most shapes by
    rotated IoU; letterboxed whole, the shapes shrink below what it detects. Measured on
    this image (1 thread): sliced 20 of 24 shapes found (rotated IoU >= 0.5, right class),
    with 24 unmatched boxes (it was trained on larger shapes: 17-120 px at its input);
    whole: 0 of 24."""
    import json

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_eval_set
    from mmyolo_vis_hooks.engine.slicing import (BatchPredictor, SliceSettings,
                                                 load_coco_ground_truth, match_detections,
                                                 sliced_predict)
    from mmyolo_vis_hooks.runtime.images import read_image
    model, _, _ = trained_rotated
    ann_file = generate_large_eval_set(str(tmp_path), 0, images=((800, 640, 24), ),
                                       rotated=True)
    file_name = json.load(open(ann_file))['images'][0]['file_name']
    image = read_image(osp.join(str(tmp_path), file_name))
    classes = model.dataset_meta['classes']
    gt_boxes, gt_labels = load_coco_ground_truth(ann_file, file_name, classes, rotated=True)
    assert gt_boxes.shape == (24, 5)
    result = sliced_predict(BatchPredictor(model), image,
                            SliceSettings(batch_size=4, full_image=True), keep_slices=True)
    dets = result.detections
    assert dets.rotated and len(result.windows) > 4
    sliced = match_detections(dets, gt_boxes, gt_labels)
    whole = match_detections(result.full_image_detections, gt_boxes, gt_labels)
    assert sliced.recall >= 0.7 and sliced.precision >= 0.3, sliced
    assert whole.recall <= 0.1, whole
    # the merge left no two boxes of a class overlapping above its IoU threshold (0.25)
    from mmyolo_vis_hooks.engine.core.geometry import box_iou
    for label in np.unique(dets.labels):
        same = dets.bboxes[dets.labels == label]
        iou = box_iou(same, same)
        np.fill_diagonal(iou, 0)
        assert iou.max(initial=0) <= 0.25 + 1e-4

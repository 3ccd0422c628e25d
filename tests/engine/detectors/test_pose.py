"""MMYOLO's YOLOX-pose behind the detector contract (engine/detectors/pose.py): each person
keeps its candidate and the keypoints the head decodes for it; a person's CAM is its class
score's, a keypoint CAM that keypoint's visibility at the person's candidate, both equal to
pytorch-grad-cam's on the same candidate; drawing maps the keypoints like the boxes. Random
weights throughout (building the model needs mmpose)."""
import copy
import functools
import os.path as osp

import numpy as np
import pytest
import torch

from helpers import REPO_ROOT
from helpers.mmdet_models import (INPUT, METAS, assert_gradcam_equals_grad_cam,
                                  assert_methods_leave_the_model_alone, random_inputs)
from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.core.draw import COCO_SKELETON, draw_keypoints
from mmyolo_vis_hooks.engine.core.geometry import boxes_to_original, points_to_original
from mmyolo_vis_hooks.testing.cam_reference import BoxScoreTarget, FlatScoresModel


@pytest.fixture(scope='module')
def pose_model():
    pytest.importorskip('mmpose')
    from helpers.mmyolo_models import random_model
    return random_model('yolox_pose')


def _lowered_cfg(model, inputs, count: int = 150):
    """The head's test config with its threshold lowered so that ``count`` candidates of
    each image pass (random weights score ~1e-3): fewer than its ``max_per_img`` (300), up
    to which ``predict_by_feat`` keeps the keypoint indices of its candidates."""
    from mmyolo_vis_hooks.engine.detectors import explainable_detector
    with torch.no_grad():
        scores = explainable_detector(model).candidates(inputs, METAS).scores[..., 0]
    cfg = copy.deepcopy(model.bbox_head.test_cfg)
    cfg.score_thr = float(scores.sort(dim=1, descending=True)[0][:, count].max())
    return cfg


class KeypointScoresModel(FlatScoresModel):
    """grad-cam's model for keypoint CAMs: the flat ``(B, N, J)`` keypoint visibility
    scores of every candidate."""

    def forward(self, x):
        from mmyolo_vis_hooks.engine.detectors import FlatPredictions
        from mmyolo_vis_hooks.engine.detectors.base import default_metas
        feats = self.adapter.extract_feat(x)
        feats = tuple(tap(f) for tap, f in zip(self.taps, feats))
        metas = default_metas(x.shape[0], *x.shape[-2:])
        return FlatPredictions.cat(self.adapter.level_candidates(feats, metas=metas)
                                   ).keypoint_scores


# ------------------------------------------------------------------ unit
def test_points_to_original_maps_points_as_boxes_are_mapped():
    meta = dict(ori_shape=(300, 384), img_shape=(150, 192), scale_factor=(0.5, 0.5),
                batch_input_shape=(160, 192), pad_param=np.array([5., 5., 0., 0.], np.float32))
    boxes = torch.tensor([[10., 20., 100., 140.], [0., 5., 191., 154.]])
    corners = boxes.view(-1, 2, 2)
    assert torch.allclose(points_to_original(corners, meta).view(-1, 4),
                          boxes_to_original(boxes, meta))
    # unclamped: a point in the padding maps outside the image
    assert points_to_original(torch.tensor([[0., 0.]]), meta).tolist() == [[0., -10.]]


def test_coco_skeleton_is_mmposes():
    pytest.importorskip('mmpose')
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    meta = parse_pose_metainfo(dict(from_file='configs/_base_/datasets/coco.py'))
    assert [tuple(link) for link in meta['skeleton_links']] == list(COCO_SKELETON)


def test_draw_keypoints_draws_visible_keypoints_and_their_links():
    image = np.zeros((100, 100, 3), np.uint8)
    points = np.array([[20., 20.], [80., 20.], [50., 80.]])
    scores = np.array([0.9, 0.8, 0.1])
    out = draw_keypoints(image, points, scores, skeleton=[(0, 1), (1, 2)], kpt_thr=0.3,
                         radius=3)
    assert (out[20, 20] == (255, 0, 255)).all() and (out[20, 80] == (255, 0, 255)).all()
    assert (out[20, 50] > 200).all()  # the (anti-aliased, white) link of the visible two
    assert not out[70:90, 40:60].any()  # the invisible keypoint and its link: not drawn
    ringed = draw_keypoints(image, points, scores, skeleton=[], kpt_thr=0.3, radius=3,
                            highlight=2)
    assert ringed[74:87, 44:57].any() and not ringed[80, 50].any()  # a ring, no dot
    assert not image.any()  # drawn on a copy


def test_keypoint_option_is_checked_without_a_model():
    with pytest.raises(ValueError, match='keypoint must be None or a keypoint index'):
        BoxCAM.check_options(keypoint=-1)
    with pytest.raises(TypeError, match='keypoint must be None or a keypoint index'):
        BoxCAM.check_options(keypoint='nose')
    from mmyolo_vis_hooks.hooks.boxam_vis_hook import BoxAMVisHook
    with pytest.raises(ValueError, match='BoxAMVisHook: keypoint must be None or a keypoint'):
        BoxAMVisHook(score_thr=0.3, keypoint=-2)


# ------------------------------------------------------------------ slow: the model
@pytest.mark.slow
def test_persons_and_keypoints_are_the_models_own_prediction(pose_model, monkeypatch):
    """``model.predict`` (rescaled; MMYOLO 0.6's ``YOLOXPoseHead.predict_by_feat`` needs its
    ``cfg`` passed) gives the same persons, scores, boxes, keypoints and keypoint scores as
    our selection mapped to the original image."""
    from mmyolo_vis_hooks.engine.detectors import explainable_detector
    from mmyolo_vis_hooks.engine.detectors.base import samples_of
    from mmyolo_vis_hooks.engine.detectors.pose import PoseDetector
    model, head = pose_model, pose_model.bbox_head
    detector = explainable_detector(model)
    assert isinstance(detector, PoseDetector) and detector.predicts_keypoints
    assert detector.num_keypoints == 17
    inputs = random_inputs()
    cfg = _lowered_cfg(model, inputs)
    monkeypatch.setattr(head, 'predict_by_feat',
                        functools.partial(type(head).predict_by_feat, head, cfg=cfg))
    with torch.no_grad():
        theirs = model.predict(inputs, samples_of(METAS), rescale=True)
        preds = detector.candidates(inputs, METAS)
        ours = detector.select(preds, cfg.score_thr, 0, METAS)
    for b, (det, ref) in enumerate(zip(ours, theirs)):
        ref = ref.pred_instances
        assert len(det) == len(ref) > 5
        assert np.array_equal(det.labels.numpy(), ref.labels)
        assert np.array_equal(det.scores.numpy(), ref.scores)
        assert np.allclose(boxes_to_original(det.boxes, METAS[b]).numpy(), ref.bboxes,
                           atol=1e-4)
        assert det.keypoints.shape == (len(ref), 17, 2)
        assert np.allclose(points_to_original(det.keypoints, METAS[b]).numpy(),
                           ref.keypoints, atol=1e-4)
        assert np.array_equal(det.keypoint_scores.numpy(), ref.keypoint_scores)
        assert 0 < ref.keypoint_scores.min() < ref.keypoint_scores.max() < 1
        # a candidate's keypoint scores are sigmoid(its visibility logits)
        assert torch.equal(preds.keypoint_scores[b, det.priors], det.keypoint_scores)
        # (a sigmoid of fewer values may round differently: vector and scalar kernels)
        assert torch.allclose(preds.keypoint_logits[b, det.priors].sigmoid(),
                              det.keypoint_scores, rtol=1e-6, atol=1e-12)
    # boxes only (sliced inference): the head's own decoding
    with torch.no_grad():
        outs = detector.forward(inputs)
        boxes, scores, labels, counts = detector.decode(outs, METAS, cfg)
    assert counts == [len(r.pred_instances) for r in theirs]
    assert np.array_equal(scores.numpy(), np.concatenate([r.pred_instances.scores
                                                          for r in theirs]))


@pytest.mark.slow
def test_a_pose_head_decoding_its_own_way_is_refused(pose_model):
    from mmyolo_vis_hooks.engine.detectors import explainable_detector
    model = copy.deepcopy(pose_model)
    head_type = type(model.bbox_head)
    model.bbox_head.__class__ = type('MyPoseHead', (head_type, ), {
        'decode_pose': lambda self, *args: None})
    with pytest.raises(ValueError, match='MyPoseHead decodes its keypoints its own way'):
        explainable_detector(model)
    model.bbox_head.__class__ = type('MyPlainPoseHead', (head_type, ), {})
    assert explainable_detector(model).predicts_keypoints  # a plain subclass is explained


@pytest.mark.slow
def test_person_gradcam_equals_grad_cam(pose_model):
    assert_gradcam_equals_grad_cam(pose_model, random_inputs(3)[:1])


@pytest.mark.slow
@pytest.mark.parametrize('keypoint', [0, 9])
def test_keypoint_gradcam_equals_grad_cam(pose_model, keypoint):
    """Per person, the keypoint CAM (``keypoint=j``) equals grad-cam's GradCAM on the flat
    keypoint scores with a target selecting (the person's candidate, j); the ``logit``
    target (the visibility logit) gives the same normalised map, and it differs from the
    person's CAM."""
    import pytorch_grad_cam as gc
    model, inputs = pose_model, random_inputs(3)[:1]
    wrapper = KeypointScoresModel(model)
    try:
        result = BoxCAM(model, 'gradcam', score_thr=0.0, topk=3, target='log_score',
                        keypoint=keypoint)(inputs)[0]
        logit = BoxCAM(model, 'gradcam', score_thr=0.0, topk=3, keypoint=keypoint)(inputs)[0]
        person = BoxCAM(model, 'gradcam', score_thr=0.0, topk=3, target='log_score')(inputs)[0]
        assert len(result) == 3 and result.keypoint == keypoint and not any(result.reasons)
        assert torch.equal(result.detections.priors, person.detections.priors)
        reference = gc.GradCAM(wrapper, list(wrapper.taps))
        for k, candidate in enumerate(result.detections.priors):
            theirs = reference(inputs, targets=[BoxScoreTarget(int(candidate), keypoint)])[0]
            ours = result.box_maps()[k].numpy()
            assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999, k
            assert np.corrcoef(ours.ravel(), logit.box_maps()[k].numpy().ravel())[0, 1] > 0.999
            assert not np.allclose(ours, person.box_maps()[k].numpy(), atol=1e-3)
        reference.activations_and_grads.release()
    finally:
        model.zero_grad(set_to_none=True)  # grad-cam's backward filled parameter .grad
        model.eval()


@pytest.mark.slow
def test_cam_methods_leave_the_pose_model_alone(pose_model):
    assert_methods_leave_the_model_alone(pose_model, random_inputs()[:1],
                                         ['gradcam', 'eigencam', 'ablationcam', 'drise'],
                                         ratio_channels_to_ablate=0.25, num_masks=32)
    # keypoint CAMs too
    model = pose_model
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        result = BoxCAM(model, 'gradcam++', score_thr=0.0, topk=2, keypoint=5)(
            random_inputs()[:1], METAS[:1])[0]
        assert len(result) == 2 and torch.isfinite(result.box_maps()).all()
        assert all(m.training for m in model.modules())
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


@pytest.mark.slow
def test_keypoint_option_is_refused_where_it_cannot_apply(pose_model):
    with pytest.raises(ValueError, match='keypoint must be below 17'):
        BoxCAM(pose_model, keypoint=17)
    with pytest.raises(ValueError, match='keypoint targets need a gradient method; eigencam'):
        BoxCAM(pose_model, 'eigencam', keypoint=0)
    from helpers.mmyolo_models import random_model
    with pytest.raises(ValueError, match=r'keypoint=0 needs a pose detector; YOLOXHead'):
        BoxCAM(random_model('yolox'), keypoint=0)


@pytest.mark.slow
def test_drawn_tiles_show_each_persons_keypoints(pose_model):
    """Each tile shows its own person's keypoints (mapped to the original image like its
    box), those whose visibility reaches ``kpt_thr``."""
    from mmyolo_vis_hooks.engine.cam.draw import draw_box_cams, keypoints_on_image
    meta = METAS[0]
    result = BoxCAM(pose_model, score_thr=0.0, topk=2)(random_inputs()[:1], METAS[:1])[0]
    image = np.full((240, 250, 3), 128, np.uint8)
    points, scores = keypoints_on_image(result, meta, (240, 250))
    assert np.allclose(points, points_to_original(result.detections.keypoints, meta).numpy())
    plain = draw_box_cams(image, result, meta, kpt_thr=1.0)  # no keypoint reaches 1.0
    drawn = draw_box_cams(image, result, meta, kpt_thr=0.0)
    assert plain.shape == drawn.shape and not np.array_equal(plain, drawn)


@pytest.mark.slow
def test_boxam_vis_draws_keypoint_cams_of_a_pose_config(tmp_path, shapes_data, pose_model,
                                                          capsys):
    """``mmyolo-boxam --keypoint`` on a YOLOX-pose config: its test pipeline packs keys only
    its dataset gives (``id``, ``flip_indices``), left out for a bare image; one titled tile
    per person."""
    import cv2
    from helpers import packaged_config
    from helpers.mmyolo_models import POSE
    from mmyolo_vis_hooks.cli import boxam_vis
    checkpoint = str(tmp_path / 'pose.pth')
    torch.save(dict(state_dict=pose_model.state_dict()), checkpoint)
    image = shapes_data + 'val/val_00000.png'
    out = tmp_path / 'out'
    boxam_vis.main([image, packaged_config(POSE['yolox_pose']), checkpoint, '--device', 'cpu',
                    '--score-thr', '0', '--topk', '2', '--keypoint', '9', '--out-dir',
                    str(out)])
    assert 'wrote 1 image(s)' in capsys.readouterr().out
    drawn, ori = cv2.imread(str(out / 'val_00000.png')), cv2.imread(image)
    assert drawn.shape == (ori.shape[0] + 16, 2 * ori.shape[1] + 4, 3)


# ------------------------------------------------------------------ the trained YOLOX-pose (slow)
# The small YOLOX-pose trained on the stick-figure data (tests/assets/README.md)
TRAINED = (osp.join(REPO_ROOT, 'configs', 'demo', 'yolox_pose_shapes.py'),
           osp.join(REPO_ROOT, 'tests', 'assets', 'yolox_pose_shapes.pth'))


@pytest.fixture(scope='module')
def trained_pose(tmp_path_factory):
    """``(model, load_image, data_root)``: the trained YOLOX-pose (eval mode) and the first
    8 val images of the stick-figure data (seed 0: validated on, never trained on)."""
    pytest.importorskip('mmpose')
    from mmengine.registry import init_default_scope

    from mmyolo_vis_hooks.data.synthetic_shapes import generate_pose_demo_data
    from mmyolo_vis_hooks.runtime.models import build_detector, build_image_loader
    root = str(tmp_path_factory.mktemp('stick_figures'))
    generate_pose_demo_data(root, seed=0, num_train=0, num_val=8)
    model = build_detector(*TRAINED, device='cpu')
    init_default_scope(model.cfg.default_scope)  # the test pipeline's registry
    return model, build_image_loader(model.cfg), root


@pytest.mark.slow
def test_trained_pose_model_finds_the_figures_and_their_keypoints(trained_pose):
    """On 8 val images, the figures are found (box IoU >= 0.5, score >= 0.3) with few
    spurious boxes, and each found figure's keypoints lie near its own: the median distance,
    over its 17 keypoints, as a fraction of the box's longer side. Measured: 13 of 13
    found, none spurious; per-figure medians 0.012-0.037 (median 0.016). On all 80 val
    images: 149 of 149 found, none spurious, medians up to 0.054 (wrists and ankles are the
    least precise keypoints, about 0.035 of the box)."""
    import json

    from mmdet.structures.bbox import bbox_overlaps
    model, load_image, root = trained_pose
    with open(osp.join(root, 'annotations', 'val.json'), encoding='utf-8') as f:
        coco = json.load(f)
    found, total, spurious, medians = 0, 0, 0, []
    for img in coco['images']:
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        gt = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)])
        gt_kpts = np.array([np.reshape(a['keypoints'], (17, 3))[:, :2] for a in anns])
        data = model.data_preprocessor(
            load_image(osp.join(root, 'val', img['file_name']), img['id']), False)
        with torch.no_grad():
            pred = model.predict(data['inputs'], data['data_samples'])[0].pred_instances
        keep = np.asarray(pred.scores) >= 0.3
        iou = bbox_overlaps(gt, torch.as_tensor(np.asarray(pred.bboxes)[keep]).float())
        kpts = np.asarray(pred.keypoints)[keep]
        total += len(gt)
        if iou.shape[1] == 0:
            continue
        spurious += int((iou.max(0).values < 0.5).sum())
        for g in range(len(gt)):
            if iou[g].max() >= 0.5:
                j = int(iou[g].argmax())
                found += 1
                size = float((gt[g, 2:] - gt[g, :2]).max())
                medians.append(np.median(np.linalg.norm(kpts[j] - gt_kpts[g], axis=1)) / size)
    assert found >= 0.9 * total, (found, total)
    assert spurious <= 0.1 * total, (spurious, total)
    assert np.median(medians) <= 0.05, sorted(medians)
    assert max(medians) <= 0.1, sorted(medians)


@pytest.mark.slow
def test_a_pose_models_one_class_is_a_person(trained_pose):
    """MMPose's dataset metainfo names keypoints, not classes: the captions say 'person',
    not the class index."""
    from mmyolo_vis_hooks.engine.detectors import explainable_detector
    model, _, _ = trained_pose
    assert not (model.dataset_meta or {}).get('classes')
    assert explainable_detector(model).class_names == ['person']

"""MMDetection's two-stage detectors behind the detector contract: candidates are the RoIs of
the RPN's proposals, the selection is the RoI head's own ``multiclass_nms``, and a box's CAM
is the gradient of its own class logit from its own RoI."""
import pytest
import torch

from helpers.mmdet_models import (METAS, TWO_STAGE, assert_gradcam_equals_grad_cam,
                                  assert_methods_leave_the_model_alone,
                                  assert_selection_equals_predict, random_inputs,
                                  random_mmdet_model)
from mmyolo_vis_hooks.engine.cam import METHODS
from mmyolo_vis_hooks.engine.detectors import UnsupportedDetectorError, explainable_detector
from mmyolo_vis_hooks.engine.detectors.two_stage import TwoStageDetector


def _loose_test_cfg(model):
    """Random weights spread the softmax over 81 columns: a low threshold gives boxes."""
    cfg = model.roi_head.test_cfg
    saved = dict(cfg)
    cfg.score_thr = 0.0
    return cfg, saved


@pytest.mark.slow
@pytest.mark.parametrize('name', list(TWO_STAGE))
def test_selection_is_the_roi_heads_own_prediction(name):
    """RPN, RoI head, multiclass NMS: the same detections as ``model.predict``."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, TwoStageDetector)
    cfg, saved = _loose_test_cfg(model)
    try:
        assert_selection_equals_predict(model, detector, random_inputs())
    finally:
        cfg.update(saved)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['faster_rcnn', 'cascade_rcnn', 'grid_rcnn', 'htc', 'scnet',
                                  'sabl_faster_rcnn', 'sabl_cascade_rcnn', 'tridentnet',
                                  'seesaw_mask_rcnn', 'v3det_cascade_rcnn'])
def test_gradcam_equals_grad_cam_on_the_same_roi(name):
    """The candidates are the same proposals' RoIs; grad-cam's target picks (RoI, class)."""
    model = random_mmdet_model(name)
    cfg, saved = _loose_test_cfg(model)
    # the RoI head pools from the first levels only (the last FPN level feeds the RPN); HTC's
    # and SCNet's semantic (and global context) heads read every level
    extractor = model.roi_head.bbox_roi_extractor
    levels = None if name in ('htc', 'scnet') else \
        (extractor[-1] if 'cascade' in name else extractor).num_inputs
    try:
        assert_gradcam_equals_grad_cam(model, random_inputs(3)[:1], levels)
    finally:
        cfg.update(saved)


@pytest.mark.slow
def test_every_method_explains_faster_rcnn_boxes_and_leaves_the_model_alone():
    model = random_mmdet_model('faster_rcnn')
    cfg, saved = _loose_test_cfg(model)
    try:
        assert_methods_leave_the_model_alone(model, random_inputs(5)[:1], METHODS,
                                             ratio_channels_to_ablate=0.1, num_masks=32)
    finally:
        cfg.update(saved)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['htc', 'scnet'])
def test_every_method_explains_semantic_cascade_boxes_and_leaves_the_model_alone(name):
    """HTC and SCNet: the semantic (and global context) features computed for the box branch
    leave no state behind either."""
    model = random_mmdet_model(name)
    cfg, saved = _loose_test_cfg(model)
    try:
        assert_methods_leave_the_model_alone(model, random_inputs(5)[:1], METHODS,
                                             ratio_channels_to_ablate=0.1, num_masks=32)
    finally:
        cfg.update(saved)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['sabl_faster_rcnn', 'sabl_cascade_rcnn'])
def test_sabl_scores_are_class_scores_times_localization_confidence(name):
    """SABL's RoI head multiplies each RoI's bucketing confidence into its class scores
    after the threshold (``multiclass_nms``'s score factors): the candidates carry both."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    with torch.no_grad():
        preds = detector.candidates(random_inputs(), METAS)
    assert preds.score_factors is not None and preds.class_scores is not None
    assert ((preds.score_factors > 0) & (preds.score_factors < 1)).all()
    assert torch.allclose(preds.scores, preds.class_scores * preds.score_factors[..., None])
    assert torch.allclose(preds.log_scores.exp(), preds.scores, atol=1e-6)


@pytest.mark.slow
def test_every_method_explains_tridentnet_boxes_and_leaves_the_model_alone():
    model = random_mmdet_model('tridentnet')
    cfg, saved = _loose_test_cfg(model)
    try:
        assert_methods_leave_the_model_alone(model, random_inputs(5)[:1], METHODS,
                                             ratio_channels_to_ablate=0.01, num_masks=16)
    finally:
        cfg.update(saved)


@pytest.mark.slow
def test_seesaw_scores_are_the_losss_own_activation():
    """Seesaw: the scores are ``loss_cls.get_activation`` (class softmax times the positive
    objectness), the log scores their logarithm, the logits the class logit plus the
    objectness logit ``o_pos - o_neg``."""
    model = random_mmdet_model('seesaw_mask_rcnn')
    detector = explainable_detector(model)
    with torch.no_grad():
        preds = detector.candidates(random_inputs(), METAS)
    num_classes = model.roi_head.bbox_head.num_classes
    assert preds.scores.shape[-1] == num_classes
    assert torch.allclose(preds.log_scores.exp(), preds.scores, rtol=1e-4, atol=1e-9)
    # the objectness enters every class's logit alike: their differences are the classes'
    assert torch.allclose((preds.logits - preds.log_scores).std(dim=-1),
                          torch.zeros(preds.scores.shape[:2]), atol=1e-3)


@pytest.mark.slow
def test_every_method_explains_seesaw_boxes_and_leaves_the_model_alone():
    model = random_mmdet_model('seesaw_mask_rcnn')
    cfg, saved = _loose_test_cfg(model)
    try:
        assert_methods_leave_the_model_alone(model, random_inputs(5)[:1], METHODS,
                                             ratio_channels_to_ablate=0.1, num_masks=16)
    finally:
        cfg.update(saved)


@pytest.mark.slow
def test_every_method_explains_sabl_cascade_boxes_and_leaves_the_model_alone():
    model = random_mmdet_model('sabl_cascade_rcnn')
    cfg, saved = _loose_test_cfg(model)
    try:
        assert_methods_leave_the_model_alone(model, random_inputs(5)[:1], METHODS,
                                             ratio_channels_to_ablate=0.1, num_masks=32)
    finally:
        cfg.update(saved)


@pytest.mark.slow
def test_tridentnet_explains_its_test_branch_and_refuses_every_branch():
    """TridentNet's test branch gives one feature map per image (explained like a Faster
    R-CNN, its selection checked above); with ``test_branch_idx=-1`` the RoI head merges the
    three branches' detections per image, which is refused in one line."""
    model = random_mmdet_model('tridentnet')
    detector = explainable_detector(model)
    with torch.no_grad():
        feats = detector.extract_feat(random_inputs())
    assert [f.shape[0] for f in feats] == [2]
    saved = model.test_branch_idx
    model.test_branch_idx = -1
    try:
        with pytest.raises(UnsupportedDetectorError, match='test_branch_idx=-1'):
            explainable_detector(model)
    finally:
        model.test_branch_idx = saved


@pytest.mark.slow
@pytest.mark.parametrize('name', ['faster_rcnn', 'seesaw_mask_rcnn'])
def test_candidates_of_some_classes_are_those_of_every_class(name):
    """Re-scoring asks for the explained boxes' classes only, and only their boxes are
    decoded (1203 LVIS classes otherwise make n x R x 1203 boxes): the same values as the
    full decoding's columns."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    classes = torch.tensor([3, 0, 3, 7])
    with torch.no_grad():
        feats = detector.extract_feat(random_inputs()[:1])
        full = detector.level_candidates(feats, metas=METAS[:1])[0]
        part = detector.level_candidates(feats, classes=classes, metas=METAS[:1],
                                         proposals=full.proposals)[0]
    assert part.class_boxes.shape == (*full.scores.shape[:2], len(classes), 4)
    assert torch.allclose(part.class_boxes, full.class_boxes[:, :, classes], atol=1e-4)
    assert torch.allclose(part.scores, full.scores[..., classes])
    assert torch.allclose(part.logits, full.logits[..., classes])


@pytest.mark.slow
def test_an_image_without_proposals_has_no_detections():
    """An RPN may keep no proposal for an image (a random caffe-style ResNet's features can
    overflow): the selection gives it no box, as ``model.predict`` does."""
    model = random_mmdet_model('faster_rcnn')
    detector = explainable_detector(model)
    feats = detector.extract_feat(random_inputs()[:1])
    with torch.no_grad():
        preds = detector.level_candidates(feats, metas=METAS[:1],
                                          proposals=torch.zeros((1, 0, 4)))[0]
        (det, ) = detector.select(preds, -1.0, 0, METAS[:1])
    assert preds.scores.shape[:2] == (1, 0)
    assert len(det) == 0 and det.boxes.shape == (0, 4)


@pytest.mark.slow
def test_grid_rcnn_boxes_are_moved_by_its_grid_head():
    """Grid R-CNN's candidates are its RoIs (no box regression); the selected boxes are
    those RoIs moved by the grid head (equal to ``model.predict``'s, checked above), each still
    scored by its own RoI's class."""
    model = random_mmdet_model('grid_rcnn')
    detector = explainable_detector(model)
    cfg, saved = _loose_test_cfg(model)
    try:
        with torch.no_grad():
            preds = detector.candidates(random_inputs(), METAS)
            dets = detector.select(preds, -1.0, 0, METAS)
    finally:
        cfg.update(saved)
    for b, det in enumerate(dets):
        rois = preds.proposals[b, det.priors]
        assert torch.equal(preds.class_boxes[b, det.priors, det.labels], rois)
        assert (det.boxes - rois).abs().amax(dim=1).gt(0.5).all()
        assert torch.equal(preds.scores[b, det.priors, det.labels], det.scores)


@pytest.mark.slow
def test_every_method_explains_grid_rcnn_boxes_and_leaves_the_model_alone():
    model = random_mmdet_model('grid_rcnn')
    cfg, saved = _loose_test_cfg(model)
    try:
        assert_methods_leave_the_model_alone(model, random_inputs(5)[:1], METHODS,
                                             ratio_channels_to_ablate=0.1, num_masks=32)
    finally:
        cfg.update(saved)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['faster_rcnn', 'cascade_rcnn'])
def test_candidates_do_not_depend_on_the_features_memory_layout(name):
    """mmcv's RoIAlign reads its input as contiguous NCHW memory whatever its strides. The
    candidates and the batched decoding must not change with the layout of the features the
    RoIs are pooled from: a channels-last input (D-RISE, faithfulness and the sliced predictor
    on the CPU) and AblationCAM's re-scoring (unchanged levels given at batch 1 and broadcast
    beside a changed level of n copies, a stride-0 batch dimension)."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    inputs = random_inputs(7)[:1]
    with torch.no_grad():
        reference = detector.candidates(inputs, METAS[:1])
        channels_last = detector.candidates(
            inputs.contiguous(memory_format=torch.channels_last), METAS[:1])
        # the same proposals for every copy, as AblationCAM re-scores
        feats = detector.extract_feat(inputs)
        copies = 3
        repeated = detector.level_candidates([f.repeat(copies, 1, 1, 1) for f in feats],
                                             metas=METAS[:1], proposals=reference.proposals)[0]
        broadcast = detector.level_candidates(
            [f.repeat(copies, 1, 1, 1) if i == 1 else f for i, f in enumerate(feats)],
            metas=METAS[:1], proposals=reference.proposals)[0]
    assert reference.scores.shape[1] > 5
    assert torch.allclose(channels_last.scores, reference.scores, atol=1e-5)
    assert torch.allclose(channels_last.boxes, reference.boxes, atol=1e-3)
    for b in range(copies):
        assert torch.allclose(repeated.scores[b], reference.scores[0], atol=1e-5), b
        assert torch.allclose(broadcast.scores[b], reference.scores[0], atol=1e-5), b
    # the sliced predictor: detector.forward then detector.decode (the model's own predict)
    cfg, saved = _loose_test_cfg(model)
    try:
        with torch.no_grad():
            ours, theirs = (detector.decode(detector.forward(x), METAS[:1], dict(cfg))
                            for x in (inputs.contiguous(memory_format=torch.channels_last),
                                      inputs))
    finally:
        cfg.update(saved)
    assert ours[3] == theirs[3] and ours[3][0] > 5
    assert torch.equal(ours[2], theirs[2])
    assert torch.allclose(ours[1], theirs[1], atol=1e-6)
    assert torch.allclose(ours[0], theirs[0], atol=1e-3)


@pytest.mark.slow
def test_gradcam_on_a_backbone_that_needs_more_than_a_tiny_input():
    """A deformable convolution in ResNet's last stage refuses a map smaller than its kernel.
    Which FPN outputs the scores read (the level only the RPN reads is dropped) is found with
    one forward of blank images of the explained inputs' size: it was a fixed 64 px, too
    small for such a model whatever the user's image (GFL, RepPoints, Faster R-CNN with
    ``dconv-c3-c5``)."""
    from helpers.mmdet_models import mmdet_config
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    from mmyolo_vis_hooks.runtime.models import build_detector
    torch.manual_seed(0)
    model = build_detector(
        mmdet_config('dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py'), device='cpu',
        cfg_options={'model.test_cfg.rpn.nms_pre': 256, 'model.test_cfg.rpn.max_per_img': 64,
                     'model.test_cfg.rcnn.score_thr': 0.0})
    inputs = random_inputs(3)[:1]
    result, = BoxCAM(model, 'gradcam', score_thr=0.0, topk=2)(inputs, METAS[:1])
    assert len(result) == 2
    maps = result.box_maps()
    assert maps.shape[-2:] == inputs.shape[-2:] and torch.isfinite(maps).all()
    # the FPN's extra level feeds the RPN only: left out of the explained layers
    assert len(result.layer_keys) == 4, result.layer_keys

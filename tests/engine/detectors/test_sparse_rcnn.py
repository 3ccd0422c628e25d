"""MMDetection's Sparse R-CNN and QueryInst behind the detector contract: candidates are the
learned proposals after the last stage, the selection is ``SparseRoIHead.predict_bbox``'s
top-k over (proposal, class), a box's CAM is the gradient of its proposal's class logit at the
last stage, and QueryInst's detections carry the RoI head's own masks."""
import pytest

from helpers.mmdet_models import (INPUT, METAS, SPARSE_RCNN, assert_decode_equals_predict,
                                  assert_gradcam_equals_grad_cam,
                                  assert_masks_equal_predict,
                                  assert_methods_leave_the_model_alone,
                                  assert_selection_equals_predict, random_inputs,
                                  random_mmdet_model)
from mmyolo_vis_hooks.engine.cam import METHODS
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.detectors.sparse_rcnn import SparseRCNNDetector


@pytest.mark.slow
@pytest.mark.parametrize('name', list(SPARSE_RCNN))
def test_selection_is_the_sparse_roi_heads_own_prediction(name):
    """Every stage, last-stage top-k over (proposal, class): ``model.predict``'s detections."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, SparseRCNNDetector)
    assert detector.predicts_masks == (name == 'queryinst')
    assert_selection_equals_predict(model, detector, random_inputs())


@pytest.mark.slow
def test_queryinst_instances_are_the_models_own_prediction():
    """QueryInst's masks: the last stage's mask head on the chosen (proposal, class) pairs,
    bit for bit ``model.predict(..., rescale=False)``'s."""
    model = random_mmdet_model('queryinst')
    assert_masks_equal_predict(model, explainable_detector(model), random_inputs())


@pytest.mark.slow
def test_queryinst_box_wholly_outside_the_image_gets_an_empty_mask():
    """Sparse R-CNN's box coder does not clip, and MMDetection's paste fails when every box lies
    wholly outside the image: such a box gets an empty mask, the others keep theirs."""
    import torch
    model = random_mmdet_model('queryinst')
    detector = explainable_detector(model)
    inputs = random_inputs()[:1]
    with torch.no_grad():
        preds = detector.candidates(inputs, METAS[:1])
        (det, ) = detector.select(preds, -1.0, 3, METAS[:1])
        index = det.priors * preds.scores.shape[-1] + det.labels
        det.boxes[1:] += INPUT[-1] + 10.0  # two boxes right of the image
        masks = detector._masks(preds, 0, det, index, METAS[0])
        det.boxes[:1] += INPUT[-1] + 10.0  # all three
        none = detector._masks(preds, 0, det, index, METAS[0])
    assert masks[0].any() and not masks[1:].any() and not none.any()


@pytest.mark.slow
@pytest.mark.parametrize('name', list(SPARSE_RCNN))
def test_sliced_decode_gives_predicts_boxes(name):
    """The boxes-only decode (no QueryInst masks) = ``model.predict(..., rescale=True)``."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert_decode_equals_predict(model, detector, random_inputs(),
                                 cfg=dict(detector.test_cfg, score_thr=-1), box_atol=0.0)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(SPARSE_RCNN))
def test_sparse_rcnn_gradcam_equals_grad_cam_on_the_same_proposal(name):
    """grad-cam's target picks the box's (proposal, class) of the last stage's scores."""
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


@pytest.mark.slow
def test_every_method_explains_sparse_rcnn_boxes_and_leaves_the_model_alone():
    assert_methods_leave_the_model_alone(random_mmdet_model('sparse_rcnn'),
                                         random_inputs(5)[:1], METHODS,
                                         ratio_channels_to_ablate=0.05, num_masks=16)

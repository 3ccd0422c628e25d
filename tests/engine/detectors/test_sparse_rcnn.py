"""MMDetection's Sparse R-CNN and QueryInst behind the detector contract: candidates are the
learned proposals after the last stage, the selection is ``SparseRoIHead.predict_bbox``'s
top-k over (proposal, class), a box's CAM is the gradient of its proposal's class logit at the
last stage, and QueryInst's detections carry the RoI head's own masks."""
import pytest

from helpers.mmdet_models import (SPARSE_RCNN, assert_gradcam_equals_grad_cam,
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
@pytest.mark.parametrize('name', list(SPARSE_RCNN))
def test_sparse_rcnn_gradcam_equals_grad_cam_on_the_same_proposal(name):
    """grad-cam's target picks the box's (proposal, class) of the last stage's scores."""
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


@pytest.mark.slow
def test_every_method_explains_sparse_rcnn_boxes_and_leaves_the_model_alone():
    assert_methods_leave_the_model_alone(random_mmdet_model('sparse_rcnn'),
                                         random_inputs(5)[:1], METHODS,
                                         ratio_channels_to_ablate=0.05, num_masks=16)

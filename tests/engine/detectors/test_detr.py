"""MMDetection's DETR family behind the detector contract: candidates are the queries, the
selection is the head's own last-layer top-k (of DDQ-DETR's distinct queries), and a box's CAM
is the gradient of its query's class logit at the last decoder layer."""
import pytest
import torch

from helpers.mmdet_models import (DETR, METAS, assert_gradcam_equals_grad_cam,
                                  assert_methods_leave_the_model_alone,
                                  assert_selection_equals_predict, random_inputs,
                                  random_mmdet_model)
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.detectors.detr import DETRDetector


@pytest.mark.slow
@pytest.mark.parametrize('name', list(DETR))
def test_selection_is_the_detr_heads_own_prediction(name):
    """Last decoder layer, top-k: the same detections as ``model.predict``."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, DETRDetector)
    assert_selection_equals_predict(model, detector, random_inputs())


@pytest.mark.slow
@pytest.mark.parametrize('name', ['detr', 'deformable_detr', 'ddq_detr'])
def test_gradcam_equals_grad_cam_on_the_same_query(name):
    """grad-cam's target picks the box's (query, class) of the query scores."""
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


@pytest.mark.slow
def test_every_method_explains_dino_boxes_and_leaves_the_model_alone():
    # a transformer forward takes ~1 s here: one method of each code path (gradients are
    # compared with grad-cam above), few ablations and masks
    assert_methods_leave_the_model_alone(
        random_mmdet_model('dino'), random_inputs(5)[:1],
        ('gradcam++', 'eigencam', 'ablationcam', 'drise'), ratio_channels_to_ablate=0.02,
        num_masks=16)


@pytest.mark.slow
def test_ddq_detr_selects_among_its_distinct_queries_only():
    """DDQ-DETR's decoder suppresses overlapping queries (NMS between layers); the queries its
    last mask leaves out are invalid candidates scoring 0 and never selected, and the
    selection (equal to ``model.predict``'s, checked above) holds distinct queries only."""
    model = random_mmdet_model('ddq_detr')
    detector = explainable_detector(model)
    with torch.no_grad():
        preds = detector.candidates(random_inputs(), METAS)
        dets = detector.select(preds, -1.0, 0, METAS)
    for b, det in enumerate(dets):
        valid = preds.valid[b]
        assert 5 < int(valid.sum()) < valid.numel()  # some queries suppressed, some kept
        assert not preds.scores[b][~valid].any()
        assert torch.isneginf(preds.log_scores[b][~valid]).all()
        assert valid[det.priors].all() and len(det) == 300


@pytest.mark.slow
def test_every_method_explains_ddq_detr_boxes_and_leaves_the_model_alone():
    assert_methods_leave_the_model_alone(
        random_mmdet_model('ddq_detr'), random_inputs(5)[:1],
        ('gradcam', 'eigencam', 'ablationcam', 'drise'), ratio_channels_to_ablate=0.02,
        num_masks=16)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['detr', 'deformable_detr'])
def test_gradcam_of_the_encoder_tokens_equals_grad_cam(name):
    """The encoder's output tokens, what the decoder reads, as one map per level (DETR: its
    one level; Deformable DETR: all four) equal grad-cam's on taps of the same levels."""
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1],
                                   token_layer='encoder')


@pytest.mark.slow
def test_rescoring_methods_swap_one_level_of_the_encoder_tokens():
    """AblationCAM replaces one level of the tokens (the others as they were); EigenCAM reads
    the levels' maps."""
    assert_methods_leave_the_model_alone(
        random_mmdet_model('deformable_detr'), random_inputs(5)[:1],
        ('eigencam', 'ablationcam'), ratio_channels_to_ablate=0.02, num_masks=16,
        reliable=True, target_layers=['encoder'])

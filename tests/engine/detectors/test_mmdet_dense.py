"""MMDetection's dense one-stage detectors behind the detector contract: the adapter's
candidates and selection are the head's own post-processing, and box CAMs on them agree with
pytorch-grad-cam's classes on a target that selects the same candidate."""
import pytest
import torch

from helpers.mmdet_models import (DENSE, METAS, assert_gradcam_equals_grad_cam,
                                  assert_methods_leave_the_model_alone, random_inputs,
                                  random_mmdet_model)
from mmyolo_vis_hooks.engine.cam import METHODS
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.detectors.mmdet_dense import MMDetDenseDetector


@pytest.mark.slow
@pytest.mark.parametrize('name', list(DENSE))
def test_selection_is_the_heads_own_post_processing(name):
    """The detections chosen from the flat candidates = ``head.predict_by_feat`` with
    rescaling (same count, labels, scores and boxes), and each keeps the candidate whose score
    it is."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, MMDetDenseDetector)
    inputs = random_inputs()
    if name == 'ssdlite':
        # MMDetection 3.3's own SSD inference raises AttributeError: 'SSDHead' object has no
        # attribute 'loss_cls' (_predict_by_feat_single reads loss_cls.custom_cls_channels):
        # a module without that attribute lets the reference run.
        with pytest.raises(AttributeError, match='loss_cls'):
            model.bbox_head.predict_by_feat(*model.bbox_head(model.extract_feat(inputs)),
                                            batch_img_metas=METAS, rescale=True)
        model.bbox_head.loss_cls = torch.nn.Identity()
    try:
        _compare_with_mmdet(model, detector, inputs)
    finally:
        if name == 'ssdlite':
            del model.bbox_head.loss_cls


def _compare_with_mmdet(model, detector, inputs):
    with torch.no_grad():
        theirs = model.bbox_head.predict_by_feat(
            *model.bbox_head(model.extract_feat(inputs)), batch_img_metas=METAS,
            rescale=True)
        preds = detector.candidates(inputs, METAS)
        ours = detector.select(preds, 0.0, 0, METAS)
    assert sum(len(ref) for ref in theirs) > 10, 'too few detections to compare'
    for b, (det, ref) in enumerate(zip(ours, theirs)):
        assert len(det) == len(ref)
        assert torch.equal(det.labels, ref.labels)
        assert torch.allclose(det.scores, ref.scores, rtol=1e-5, atol=1e-7)
        scale = torch.tensor(METAS[b]['scale_factor'] * 2)
        assert torch.allclose(det.boxes / scale, ref.bboxes, atol=1e-3)
        assert torch.equal(preds.scores[b, det.priors, det.labels], det.scores)
    # The sliced predictor's decoding is the same selection, rescaled to the original image.
    with torch.no_grad():
        bboxes, scores, labels, counts = detector.decode(
            model.bbox_head(model.extract_feat(inputs)), METAS, detector.test_cfg)
    assert counts == [len(ref) for ref in theirs]
    assert torch.allclose(bboxes, torch.cat([ref.bboxes for ref in theirs]), atol=1e-3)
    assert torch.equal(labels, torch.cat([ref.labels for ref in theirs]))
    assert torch.allclose(scores, torch.cat([ref.scores for ref in theirs]), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['retinanet', 'fcos', 'ssdlite', 'v3det_fcos'])
def test_gradcam_equals_grad_cam_on_the_same_candidate(name):
    """grad-cam's target picks the box's (prior, class) of the flat candidate scores."""
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


@pytest.mark.slow
@pytest.mark.parametrize('name', ['retinanet', 'fcos'])
def test_every_method_explains_mmdet_boxes_and_leaves_the_model_alone(name):
    assert_methods_leave_the_model_alone(random_mmdet_model(name), random_inputs(5)[:1],
                                         METHODS, ratio_channels_to_ablate=0.25, num_masks=64,
                                         reliable=True)

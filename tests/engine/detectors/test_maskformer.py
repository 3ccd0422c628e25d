"""MMDetection's Mask2Former with instance results behind the detector contract: the
candidates are the queries (class score times mask score, the box the mask's extent), the
selection is ``MaskFormerFusionHead.instance_postprocess``'s own, each detection with its
query's mask; a box's CAM is the gradient of its query's class logit (or of its log score),
and a panoptic model with ``instance_on`` gives its "thing" classes only."""
import pytest
import torch

from helpers.mmdet_models import (METAS, assert_decode_equals_predict,
                                  assert_gradcam_equals_grad_cam,
                                  assert_methods_leave_the_model_alone, random_inputs,
                                  random_mmdet_model)
from mmyolo_vis_hooks.engine.cam import METHODS
from mmyolo_vis_hooks.engine.detectors import UnsupportedDetectorError, explainable_detector
from mmyolo_vis_hooks.engine.detectors.base import samples_of
from mmyolo_vis_hooks.engine.detectors.maskformer import MaskFormerDetector

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('name, things, classes', [('mask2former', 80, 80),
                                                   ('mask2former_panoptic', 80, 133)])
def test_instances_are_the_fusion_heads_own_prediction(name, things, classes):
    """Same detections as ``model.predict`` (without rescaling: masks and boxes on the
    network input): labels, scores, boxes and masks, best first (MMDetection's order is
    ``topk(sorted=False)``'s); things only."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, MaskFormerDetector)
    assert (detector.num_classes, detector.num_things) == (classes, things)
    inputs = random_inputs()
    with torch.no_grad():
        theirs = model.predict(inputs, samples_of(METAS), rescale=False)
        preds = detector.candidates(inputs, METAS)
        ours = detector.select(preds, -1.0, 0, METAS)
    height, width = METAS[0]['img_shape']
    for det, ref in zip(ours, theirs):
        ref = ref.pred_instances
        order = ref.scores.argsort(descending=True)
        assert len(det) == len(ref) > 5
        assert (det.labels < things).all()
        assert torch.equal(det.labels, ref.labels[order])
        assert torch.allclose(det.scores, ref.scores[order], rtol=1e-5, atol=1e-8)
        assert torch.equal(det.boxes, ref.bboxes[order])
        assert torch.equal(det.masks[:, :height, :width], ref.masks[order])
        assert not det.masks[:, height:].any() and not det.masks[:, :, width:].any()


def test_sliced_decoding_is_the_models_own_prediction():
    model = random_mmdet_model('mask2former')
    detector = explainable_detector(model)
    assert_decode_equals_predict(model, detector, random_inputs(), score_rtol=1e-6)


@pytest.mark.parametrize('name', ['mask2former', 'mask2former_panoptic'])
def test_gradcam_per_instance_equals_grad_cam(name):
    """grad-cam's target picks the instance's (query, class) of the candidate scores."""
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


def test_every_method_explains_instances_and_leaves_the_model_alone():
    assert_methods_leave_the_model_alone(random_mmdet_model('mask2former'),
                                         random_inputs(5)[:1], METHODS,
                                         ratio_channels_to_ablate=0.02, num_masks=16)


def test_a_maskformer_without_instance_results_is_refused_in_one_line():
    model = random_mmdet_model('mask2former_panoptic')
    fusion = model.panoptic_fusion_head
    saved = fusion.test_cfg
    fusion.test_cfg = dict(saved, instance_on=False)
    try:
        with pytest.raises(UnsupportedDetectorError) as info:
            explainable_detector(model)
    finally:
        fusion.test_cfg = saved
    message = str(info.value)
    assert message.startswith('Mask2Former is a query-based mask segmentor without instance '
                              'results') and 'test_cfg.instance_on=True' in message
    assert '\n' not in message

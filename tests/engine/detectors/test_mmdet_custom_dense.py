"""MMDetection's dense heads with a decoding of their own (GFL, TOOD, PAA, FoveaBox, RepPoints,
YOLOv3, MMDetection's YOLOX, SABL RetinaNet, an RPN alone, CenterNet) behind the detector
contract: the selection is the head's own prediction, the sliced predictor's batched decoding
too, and box CAMs agree with pytorch-grad-cam on a target that selects the same candidate."""
import pytest
import torch

from helpers.mmdet_models import (CUSTOM_DENSE, METAS, assert_decode_equals_predict,
                                  assert_gradcam_equals_grad_cam,
                          assert_methods_leave_the_model_alone, assert_selection_equals_predict,
                          random_inputs, random_mmdet_model)
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.detectors.base import samples_of
from mmyolo_vis_hooks.engine.detectors.centernet import CenterNetDetector
from mmyolo_vis_hooks.engine.detectors.mmdet_dense import (FoveaDetector, GFLDetector,
                                                           PAADetector, RepPointsDetector,
                                                           RPNDetector, SABLRetinaDetector,
                                                           TOODDetector)
from mmyolo_vis_hooks.engine.detectors.mmdet_yolo import YOLOV3Detector, YOLOXDetector

ADAPTERS = {'gfl': GFLDetector, 'tood': TOODDetector, 'paa': PAADetector,
            'fovea': FoveaDetector, 'reppoints': RepPointsDetector, 'yolov3': YOLOV3Detector,
            'yolox': YOLOXDetector, 'sabl_retinanet': SABLRetinaDetector, 'rpn': RPNDetector}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CUSTOM_DENSE))
def test_selection_and_decoding_are_the_heads_own_prediction(name):
    """The detections chosen from the candidates = ``model.predict`` (same count, labels,
    scores and boxes, each box's score its candidate's), and the sliced predictor's decoding
    (``forward`` then ``decode``) gives them too."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert type(detector) is ADAPTERS[name]
    inputs = random_inputs()
    # PAA lists its score-voted detections class by class
    assert_selection_equals_predict(model, detector, inputs, by_class=name == 'paa')
    assert_decode_equals_predict(model, detector, inputs, box_atol=1e-3, score_rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['gfl', 'tood', 'paa', 'yolov3', 'yolox', 'sabl_retinanet',
                                  'rpn'])
def test_gradcam_equals_grad_cam_on_the_same_candidate(name):
    """grad-cam's target picks the box's (prior, class) of the flat candidate scores: TOOD's
    scores are the head's own output, PAA's a geometric mean, YOLOv3's and YOLOX's include
    the objectness, SABL's the bucketing confidence."""
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


@pytest.mark.slow
def test_every_method_explains_sabl_retinanet_boxes_and_leaves_the_model_alone():
    assert_methods_leave_the_model_alone(
        random_mmdet_model('sabl_retinanet'), random_inputs(5)[:1],
        ('gradcam', 'eigencam', 'ablationcam', 'drise'), ratio_channels_to_ablate=0.1,
        num_masks=16)


@pytest.mark.slow
def test_every_method_explains_tood_boxes_and_leaves_the_model_alone():
    """TOOD's logits are read with forward hooks on its head: none may stay behind."""
    model = random_mmdet_model('tood')
    assert_methods_leave_the_model_alone(
        model, random_inputs(5)[:1], ('gradcam', 'eigencam', 'ablationcam', 'drise'),
        ratio_channels_to_ablate=0.1, num_masks=16)
    assert not model.bbox_head.tood_cls._forward_hooks
    assert not model.bbox_head.cls_prob_module._forward_hooks


@pytest.mark.slow
def test_centernet_selection_and_decoding_are_the_heads_own_prediction():
    """CenterNet: the local maxima's top k (location, class) pairs are ``predict``'s, each box
    its location's, on the canvas the test pipeline pasted the image into (``border``
    subtracted, as the head does, then rescaled); the batched decoding gives them too."""
    model = random_mmdet_model('centernet')
    detector = explainable_detector(model)
    assert type(detector) is CenterNetDetector
    metas = [dict(meta, border=(6.0, 126.0, 5.0, 155.0)) for meta in METAS]
    inputs = random_inputs()
    with torch.no_grad():
        theirs = [r.pred_instances for r in
                  model.predict(inputs, samples_of(metas), rescale=True)]
        preds = detector.candidates(inputs, metas)
        ours = detector.select(preds, -1.0, 0, metas)
    for b, (det, ref, meta) in enumerate(zip(ours, theirs, metas)):
        assert len(det) == len(ref) == model.bbox_head.test_cfg.topk
        assert torch.equal(det.labels, ref.labels) and torch.equal(det.scores, ref.scores)
        assert torch.equal(preds.scores[b, det.priors, det.labels], det.scores)
        border = torch.tensor([meta['border'][2], meta['border'][0]] * 2)
        scale = torch.tensor(meta['scale_factor'] * 2)
        assert torch.allclose((det.boxes - border) / scale, ref.bboxes, atol=1e-4)
    assert_decode_equals_predict(model, detector, inputs, metas)


@pytest.mark.slow
def test_centernet_gradcam_equals_grad_cam_on_the_same_location():
    """grad-cam's target picks the box's (location, class) of the heatmap's logits."""
    assert_gradcam_equals_grad_cam(random_mmdet_model('centernet'), random_inputs(3)[:1])

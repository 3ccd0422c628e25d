"""Instance-segmentation detectors behind the detector contract: each detection keeps its
candidate (its target is the candidate's class score, as a box's) and gets its mask from the
head's own mask decoding; the masks are the model's own predictions, and Grad-CAM per instance
equals pytorch-grad-cam's on the same candidate.

Kinds: MMDetection's Mask R-CNN and Cascade Mask R-CNN (two-stage kind, RoI mask head),
MMDetection's own RTMDet-ins and YOLACT (mmdet_instance kinds: the dense kind's candidates;
dynamic kernels on an image-level mask feature, or coefficients of the protonet's
prototypes), CondInst and BoxInst (condinst kind: FCOS points with the parameters of a dynamic
mask head), SOLO and SOLOv2 (solo kind: grid cells, no box branch), and MMYOLO's YOLOv5-ins
and RTMDet-ins (mmyolo_instance kind: per-candidate mask coefficients or dynamic kernels on
an image-level mask source), all with random weights."""
import mmcv
import numpy as np
import pytest
import torch

from helpers.mmyolo_models import INPUT as YOLO_INPUT, random_model
from helpers.mmdet_models import (INPUT as MMDET_INPUT, METAS as MMDET_METAS,
                                  assert_decode_equals_predict,
                                  assert_gradcam_equals_grad_cam,
                                  assert_masks_equal_predict,
                                  assert_methods_leave_the_model_alone,
                                  assert_selection_equals_predict, random_inputs,
                                  random_mmdet_model)
from mmyolo_vis_hooks.engine.cam import METHODS, BoxCAM
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.detectors.base import decode_with_predict_by_feat, samples_of
from mmyolo_vis_hooks.engine.detectors.condinst import CondInstDetector
from mmyolo_vis_hooks.engine.detectors.solo import SOLODetector
from mmyolo_vis_hooks.engine.detectors.mmdet_instance import (MMDetInstanceDetector,
                                                             YOLACTDetector)
from mmyolo_vis_hooks.engine.detectors.mmyolo_instance import MMYOLOInstanceDetector
from mmyolo_vis_hooks.engine.detectors.two_stage import TwoStageDetector

# A letterboxed image (MMYOLO's pad_param: 5 rows above and below) at half its original size.
YOLO_METAS = [dict(img_shape=(150, 192), ori_shape=(300, 384), scale_factor=(0.5, 0.5),
                   batch_input_shape=YOLO_INPUT[2:], pad_shape=YOLO_INPUT[2:],
                   pad_param=np.array([5., 5., 0., 0.], np.float32))] * YOLO_INPUT[0]


def _yolo_inputs(seed: int = 1) -> torch.Tensor:
    return torch.rand(YOLO_INPUT, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.slow
@pytest.mark.parametrize('name', ['mask_rcnn', 'cascade_mask_rcnn'])
def test_mask_rcnn_instances_are_the_models_own_prediction(name):
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, TwoStageDetector) and detector.predicts_masks
    cfg = model.roi_head.test_cfg
    saved = dict(cfg)
    cfg.score_thr = 0.0  # random weights spread the softmax over 81 columns
    try:
        assert_masks_equal_predict(model, detector, random_inputs())
    finally:
        cfg.update(saved)


@pytest.mark.slow
def test_mask_rcnn_gradcam_per_instance_equals_grad_cam():
    model = random_mmdet_model('mask_rcnn')
    cfg = model.roi_head.test_cfg
    saved = dict(cfg)
    cfg.score_thr = 0.0
    try:
        assert_gradcam_equals_grad_cam(model, random_inputs(3)[:1],
                                       model.roi_head.bbox_roi_extractor.num_inputs)
    finally:
        cfg.update(saved)


@pytest.mark.slow
def test_mmdet_rtmdet_ins_instances_are_the_heads_own_prediction():
    """MMDetection's RTMDetInsSepBNHead: the selection is ``predict``'s (rescaled boxes,
    labels, scores); with a uniform resize (where the NMS on rescaled and on input boxes
    agree) the masks on the network input are ``predict_by_feat(rescale=False)``'s bit for
    bit."""
    model = random_mmdet_model('mmdet_rtmdet_ins')
    detector = explainable_detector(model)
    assert isinstance(detector, MMDetInstanceDetector) and detector.predicts_masks
    inputs = random_inputs()
    assert_selection_equals_predict(model, detector, inputs)
    head = model.bbox_head
    metas = [dict(img_shape=(120, 150), ori_shape=(240, 300), scale_factor=(0.5, 0.5),
                  batch_input_shape=MMDET_INPUT[2:], pad_shape=MMDET_INPUT[2:])] * 2
    with torch.no_grad():
        theirs = head.predict_by_feat(*head(model.extract_feat(inputs)), batch_img_metas=metas,
                                      cfg=head.test_cfg, rescale=False)
        ours = detector.select(detector.candidates(inputs, metas), -1.0, 0, metas)
    for det, ref in zip(ours, theirs):
        assert len(det) == len(ref) > 5
        assert torch.equal(det.labels, ref.labels) and torch.equal(det.scores, ref.scores)
        assert torch.equal(det.boxes, ref.bboxes)
        assert det.masks.shape == ref.masks.shape == (len(ref), *MMDET_INPUT[2:])
        assert torch.equal(det.masks, ref.masks)
        assert 0 < int(ref.masks.sum()) < ref.masks.numel()
    # Boxes only (sliced inference): the head's own predict_by_feat, rescaled.
    with torch.no_grad():
        outs = head(model.extract_feat(inputs))
        boxes, scores, labels, counts = detector.decode(outs, MMDET_METAS, head.test_cfg)
        ref_boxes, ref_scores, ref_labels, ref_counts = decode_with_predict_by_feat(
            head, outs, MMDET_METAS, head.test_cfg)
    assert counts == ref_counts and torch.equal(labels, ref_labels)
    assert torch.equal(scores, ref_scores) and torch.allclose(boxes, ref_boxes, atol=1e-3)


@pytest.mark.slow
def test_mmdet_rtmdet_ins_gradcam_per_instance_equals_grad_cam():
    assert_gradcam_equals_grad_cam(random_mmdet_model('mmdet_rtmdet_ins'),
                                   random_inputs(3)[:1])


@pytest.mark.slow
def test_yolact_instances_are_the_models_own_prediction():
    """YOLACT: the selection (its per-level ``nms_pre`` and ``fast_nms``) is ``predict``'s;
    the masks on the network input are ``predict(rescale=False)``'s (the protonet's, on the
    image content) bit for bit."""
    model = random_mmdet_model('yolact')
    detector = explainable_detector(model)
    assert isinstance(detector, YOLACTDetector) and detector.predicts_masks
    inputs = random_inputs()
    assert_selection_equals_predict(model, detector, inputs)
    assert_masks_equal_predict(model, detector, inputs)
    # batched inference (the sliced tool): forward without ground truth
    assert_decode_equals_predict(model, detector, inputs, MMDET_METAS)


@pytest.mark.slow
def test_yolact_gradcam_per_instance_equals_grad_cam():
    assert_gradcam_equals_grad_cam(random_mmdet_model('yolact'), random_inputs(3)[:1])


@pytest.mark.slow
def test_yolov5_ins_instances_are_the_heads_own_prediction():
    """Labels, scores and boxes as ``predict_by_feat``; the masks on the network input,
    un-letterboxed and resized as ``predict_by_feat`` does (its exact, non-``fast_test``
    path: threshold, crop the padding, ``mmcv.imresize``), are its masks bit for bit."""
    model = random_model('yolov5_ins')
    detector = explainable_detector(model)
    assert isinstance(detector, MMYOLOInstanceDetector) and detector.predicts_masks
    head = model.bbox_head
    cfg = head.test_cfg.copy()
    cfg.update(fast_test=False, max_per_img=20)  # OpenCV resizes at most 512 channels
    inputs = _yolo_inputs()
    with torch.no_grad():
        theirs = head.predict_by_feat(*head(model.extract_feat(inputs)),
                                      batch_img_metas=YOLO_METAS, cfg=cfg, rescale=True)
        ours = detector.select(detector.candidates(inputs, YOLO_METAS), cfg.score_thr,
                               cfg.max_per_img, YOLO_METAS)
    for det, ref in zip(ours, theirs):
        assert len(det) == len(ref) == 20
        assert torch.equal(det.labels, ref.labels) and torch.equal(det.scores, ref.scores)
        scale = torch.tensor([0.5] * 4)
        boxes = ((det.boxes - torch.tensor([0., 5., 0., 5.])) / scale)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 384)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 300)
        assert torch.allclose(boxes, ref.bboxes, atol=1e-4)
        content = det.masks[:, 5:155].numpy().astype(np.uint8).transpose(1, 2, 0)
        resized = torch.from_numpy(mmcv.imresize(content, (384, 300))).permute(2, 0, 1)
        assert torch.equal(resized.bool(), ref.masks)
        assert 0 < int(ref.masks.sum()) < ref.masks.numel()


@pytest.mark.slow
def test_rtmdet_ins_instances_are_the_heads_own_prediction():
    """``predict_by_feat(rescale=False)`` gives RTMDet-ins masks on the network input: the
    same labels, scores and masks bit for bit (its boxes are clamped to ``ori_shape`` even
    then; ours are the candidates' own boxes)."""
    model = random_model('rtmdet_ins')
    detector = explainable_detector(model)
    assert isinstance(detector, MMYOLOInstanceDetector)
    head = model.bbox_head
    cfg = head.test_cfg
    inputs = _yolo_inputs()
    with torch.no_grad():
        theirs = head.predict_by_feat(*head(model.extract_feat(inputs)),
                                      batch_img_metas=YOLO_METAS, cfg=cfg, rescale=False)
        ours = detector.select(detector.candidates(inputs, YOLO_METAS), cfg.score_thr,
                               cfg.max_per_img, YOLO_METAS)
    for det, ref in zip(ours, theirs):
        assert len(det) == len(ref) > 5
        assert torch.equal(det.labels, ref.labels) and torch.equal(det.scores, ref.scores)
        boxes = det.boxes.clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 384)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 300)
        assert torch.allclose(boxes, ref.bboxes, atol=1e-4)
        assert torch.equal(det.masks, ref.masks)
        assert 0 < int(ref.masks.sum()) < ref.masks.numel()


@pytest.mark.slow
@pytest.mark.parametrize('name', ['yolov5_ins', 'rtmdet_ins'])
def test_mmyolo_instance_gradcam_equals_grad_cam(name):
    assert_gradcam_equals_grad_cam(random_model(name), _yolo_inputs(3)[:1])


@pytest.mark.slow
def test_instances_keep_masks_through_cams_and_drise_mask_similarity():
    """BoxCAM results carry each instance's mask; D-RISE with mask IoU gives finite maps that
    differ from the box-IoU ones; box-only detectors refuse the mask options."""
    model = random_model('yolov5_ins')
    inputs = _yolo_inputs(5)[:1]
    metas = YOLO_METAS[:1]
    result = BoxCAM(model, 'gradcam', score_thr=0.0, topk=2)(inputs, metas)[0]
    assert result.detections.masks.shape == (2, *YOLO_INPUT[2:])
    maps = {}
    for similarity in ('box', 'mask'):
        cam = BoxCAM(model, 'drise', score_thr=0.0, topk=2, num_masks=16, grid_size=4,
                     batch_size=8, drise_similarity=similarity)
        (res, ) = cam(inputs, metas)
        assert torch.equal(res.detections.priors, result.detections.priors)
        maps[similarity] = res.box_maps()
        assert torch.isfinite(maps[similarity]).all()
    assert not torch.allclose(maps['box'], maps['mask'])
    with pytest.raises(ValueError, match="drise_similarity='mask' needs instance masks"):
        BoxCAM(random_model('yolov5'), 'drise', drise_similarity='mask')


@pytest.mark.slow
@pytest.mark.parametrize('name', ['condinst', 'boxinst'])
def test_condinst_instances_are_the_models_own_prediction(name):
    """CondInst and BoxInst: the selection (FCOS's, the NMS on network-input boxes as
    ``predict`` runs it) is ``predict``'s; the masks on the network input are
    ``predict(rescale=False)``'s (the dynamic mask head's, on the image content) bit for bit;
    batched box decoding is the box head's own."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, CondInstDetector) and detector.predicts_masks
    inputs = random_inputs()
    assert_selection_equals_predict(model, detector, inputs)
    assert_masks_equal_predict(model, detector, inputs)
    with torch.no_grad():
        outs = detector.forward(inputs)
        cfg = model.bbox_head.test_cfg
        ours = detector.decode(outs, MMDET_METAS, cfg)
        theirs = detector.decode_unbatched(outs, MMDET_METAS, cfg)
    assert ours[3] == theirs[3] and torch.equal(ours[2], theirs[2])
    assert torch.equal(ours[1], theirs[1]) and torch.allclose(ours[0], theirs[0], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['condinst', 'boxinst'])
def test_condinst_gradcam_per_instance_equals_grad_cam(name):
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


@pytest.mark.slow
def test_condinst_methods_leave_the_model_alone():
    assert_methods_leave_the_model_alone(random_mmdet_model('condinst'), random_inputs(5)[:1],
                                         METHODS, ratio_channels_to_ablate=0.05, num_masks=16)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['solo', 'solov2'])
def test_solo_instances_are_the_models_own_prediction(name):
    """SOLO and SOLOv2: the instances (cells, labels, final scores after maskness and matrix
    NMS) are ``predict``'s; with ``ori_shape`` = ``img_shape`` (its masks are always resized
    to ``ori_shape``) the masks on the network input are its masks bit for bit. Each box is
    its mask's bounding box and its candidate's box; each target is its cell's class score
    above ``score_thr``. Batched decoding gives the same instances, boxes rescaled."""
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, SOLODetector) and detector.predicts_masks
    cfg = model.mask_head.test_cfg
    inputs = random_inputs()
    unscaled = [dict(meta, ori_shape=meta['img_shape']) for meta in MMDET_METAS]
    with torch.no_grad():
        theirs = model.predict(inputs, samples_of(unscaled), rescale=True)
        rescaled = model.predict(inputs, samples_of(MMDET_METAS), rescale=True)
        preds = detector.candidates(inputs, unscaled)
        ours = detector.select(preds, -1.0, 0, unscaled)
        boxes, scores, labels, counts = detector.decode(detector.forward(inputs), MMDET_METAS,
                                                        cfg)
    assert counts == [len(det) for det in ours]
    assert torch.equal(labels, torch.cat([det.labels for det in ours]))
    assert torch.equal(scores, torch.cat([det.scores for det in ours]))
    scale = torch.tensor(MMDET_METAS[0]['scale_factor'] * 2)
    assert torch.allclose(boxes, torch.cat([det.boxes for det in ours]) / scale)
    for b, (det, ref, ref_rescaled) in enumerate(zip(ours, theirs, rescaled)):
        ref, ref_rescaled = ref.pred_instances, ref_rescaled.pred_instances
        assert len(det) == len(ref) > 5
        assert torch.equal(det.labels, ref.labels) and torch.equal(det.scores, ref.scores)
        assert torch.equal(ref_rescaled.labels, ref.labels)
        assert torch.equal(ref_rescaled.scores, ref.scores)
        height, width = ref.masks.shape[-2:]
        assert det.masks.shape == (len(ref), *MMDET_INPUT[2:])
        assert torch.equal(det.masks[:, :height, :width], ref.masks)
        assert not det.masks[:, height:].any() and not det.masks[:, :, width:].any()
        assert 0 < int(ref.masks.sum()) < ref.masks.numel()
        assert torch.equal(det.boxes, preds.boxes[b, det.priors])
        for box, mask in zip(det.boxes.long(), det.masks):
            ys, xs = mask.nonzero(as_tuple=True)
            assert box.tolist() == [int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                    int(ys.max()) + 1]
        assert (preds.scores[b, det.priors, det.labels] > cfg.score_thr).all()


@pytest.mark.slow
@pytest.mark.parametrize('name', ['solo', 'solov2'])
def test_solo_gradcam_per_instance_equals_grad_cam(name):
    assert_gradcam_equals_grad_cam(random_mmdet_model(name), random_inputs(3)[:1])


@pytest.mark.slow
def test_solo_methods_leave_the_model_alone():
    assert_methods_leave_the_model_alone(random_mmdet_model('solov2'), random_inputs(5)[:1],
                                         METHODS, ratio_channels_to_ablate=0.05, num_masks=16)


R18_NECK = {'model.backbone.depth': 18, 'model.backbone.init_cfg': None,
            'model.neck.in_channels': [64, 128, 256, 512]}


@pytest.mark.slow
@pytest.mark.parametrize('config, options, reason', [
    ('solo/decoupled-solo-light_r50_fpn_3x_coco.py', R18_NECK,
     'SOLO has no bbox_head and its mask head '
     'mmdet.models.dense_heads.solo_head.DecoupledSOLOLightHead decodes its own way'),
])
def test_instance_heads_without_an_adapter_are_refused_in_one_line(config, options, reason):
    from helpers import mmdet_config
    from mmyolo_vis_hooks.engine.detectors import UnsupportedDetectorError
    from mmyolo_vis_hooks.runtime.models import build_detector
    model = build_detector(mmdet_config(config), device='cpu', cfg_options=options)
    with pytest.raises(UnsupportedDetectorError) as info:
        explainable_detector(model)
    message = str(info.value)
    what, _, supported = message.partition(': no box CAMs for this kind; ')
    assert supported.startswith('box CAMs support ') and '\n' not in message
    assert what.endswith(reason + ', which has no adapter yet') or what.endswith(reason), \
        message


@pytest.mark.slow
@pytest.mark.parametrize('name', ['rtmdet_ins', 'mmdet_rtmdet_ins'])
def test_rtmdet_ins_rescoring_with_one_level_perturbed(name):
    """AblationCAM re-scores with the ablated level at n copies beside the others at 1; the
    RTMDet-ins mask heads (MMYOLO's and MMDetection's) fuse every level, so they must run at n
    too (the census found ``Sizes of tensors must match`` here)."""
    from mmyolo_vis_hooks.engine.cam import BoxCAM
    if name == 'rtmdet_ins':
        model, inputs, metas = random_model(name), _yolo_inputs(5)[:1], YOLO_METAS[:1]
    else:
        model, inputs, metas = random_mmdet_model(name), random_inputs(5)[:1], MMDET_METAS[:1]
    result = BoxCAM(model, 'ablationcam', score_thr=0.0, topk=2, batch_size=64,
                    ratio_channels_to_ablate=0.05)(inputs, metas)[0]
    maps = result.box_maps()
    assert maps.shape == (2, *inputs.shape[2:]) and torch.isfinite(maps).all()
    assert result.reliable.any()

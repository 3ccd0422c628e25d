"""MMDetection's two-stage detectors behind the detector contract: candidates are the RoIs of
the RPN's proposals, the selection is the RoI head's own ``multiclass_nms``, and a box's CAM
is the gradient of its own class logit from its own RoI."""
import numpy as np
import pytest
import torch

from mmdet_models import INPUT, TWO_STAGE, random_mmdet_model
from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.detectors.two_stage import TwoStageDetector
from mmyolo_vis_hooks.testing.cam_reference import BoxScoreTarget, FlatScoresModel

METAS = [dict(img_shape=(120, 150), ori_shape=(240, 250), scale_factor=(0.6, 0.5),
              batch_input_shape=INPUT[2:], pad_shape=INPUT[2:])] * INPUT[0]


def random_inputs(seed: int = 1) -> torch.Tensor:
    return torch.rand(INPUT, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _loose_test_cfg(model):
    """Random weights spread the softmax over 81 columns: a low threshold gives boxes."""
    cfg = model.roi_head.test_cfg
    saved = dict(cfg)
    cfg.score_thr = 0.0
    return cfg, saved


@pytest.mark.slow
@pytest.mark.parametrize('name', list(TWO_STAGE))
def test_selection_is_the_roi_heads_own_prediction(name):
    """The detections chosen from the RoI candidates = ``model.predict`` (RPN, RoI head,
    multiclass NMS, rescaled): same count, labels, scores and boxes; each box's score is its
    RoI's softmax entry of its class."""
    from mmdet.structures import DetDataSample
    model = random_mmdet_model(name)
    detector = explainable_detector(model)
    assert isinstance(detector, TwoStageDetector)
    inputs = random_inputs()
    cfg, saved = _loose_test_cfg(model)
    try:
        with torch.no_grad():
            theirs = model.predict(inputs, [DetDataSample(metainfo=m) for m in METAS],
                                   rescale=True)
            preds = detector.candidates(inputs, METAS)
            ours = detector.select(preds, -1.0, 0, METAS)
    finally:
        cfg.update(saved)
    for b, (det, ref) in enumerate(zip(ours, theirs)):
        ref = ref.pred_instances
        assert len(det) == len(ref) > 5
        assert torch.equal(det.labels, ref.labels)
        assert torch.allclose(det.scores, ref.scores, rtol=1e-5, atol=1e-7)
        scale = torch.tensor(METAS[b]['scale_factor'] * 2)
        assert torch.allclose(det.boxes / scale, ref.bboxes, atol=1e-3)
        assert torch.allclose(preds.scores[b, det.priors, det.labels], det.scores, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['faster_rcnn', 'cascade_rcnn'])
def test_gradcam_equals_grad_cam_on_the_same_roi(name):
    """Per box, our GradCAM (target ``log_score``) = grad-cam's GradCAM on the candidate
    scores of the same proposals, with a target selecting the box's (RoI, class)."""
    import pytorch_grad_cam as gc
    model = random_mmdet_model(name)
    inputs = random_inputs(3)[:1]
    cfg, saved = _loose_test_cfg(model)
    wrapper = FlatScoresModel(model)
    try:
        result = BoxCAM(model, 'gradcam', score_thr=0.0, topk=3, target='log_score')(inputs)[0]
        assert len(result) == 3
        # the RoI head pools from the first levels only (the last FPN level feeds the RPN)
        levels = model.roi_head.bbox_roi_extractor[-1].num_inputs if name == 'cascade_rcnn' \
            else model.roi_head.bbox_roi_extractor.num_inputs
        reference = gc.GradCAM(wrapper, list(wrapper.taps)[:levels])
        for k, (roi, label) in enumerate(zip(result.detections.priors,
                                             result.detections.labels)):
            theirs = reference(inputs, targets=[BoxScoreTarget(int(roi), int(label))])[0]
            ours = result.box_maps()[k].numpy()
            if not ours.any():  # a 1x1 level: its map is one value, zero for both
                assert not theirs.any() and result.reasons[k], k
                continue
            corr = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
            assert corr > 0.999, (k, corr)
        reference.activations_and_grads.release()
    finally:
        cfg.update(saved)
        model.zero_grad(set_to_none=True)
        model.eval()


@pytest.mark.slow
def test_every_method_explains_faster_rcnn_boxes_and_leaves_the_model_alone():
    from mmyolo_vis_hooks.engine.cam import METHODS
    model = random_mmdet_model('faster_rcnn')
    inputs = random_inputs(5)[:1]
    cfg, saved = _loose_test_cfg(model)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    try:
        for method in METHODS:
            options = dict(num_masks=32, batch_size=16) if method == 'drise' else {}
            if method == 'ablationcam':
                options = dict(batch_size=64, ratio_channels_to_ablate=0.1)
            result = BoxCAM(model, method, score_thr=0.0, topk=2, **options)(inputs, METAS[:1])[0]
            assert len(result) == 2, method
            maps = result.box_maps()
            assert maps.shape == (2, *INPUT[2:]) and torch.isfinite(maps).all(), method
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
        assert all(p.grad is None for p in model.parameters())
    finally:
        cfg.update(saved)
        model.eval()


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

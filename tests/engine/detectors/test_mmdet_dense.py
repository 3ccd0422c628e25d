"""MMDetection's dense one-stage detectors behind the detector contract: the adapter's
candidates and selection are the head's own post-processing, and box CAMs on them agree with
pytorch-grad-cam's classes on a target that selects the same candidate."""
import numpy as np
import pytest
import torch

from mmdet_models import DENSE, INPUT, random_mmdet_model
from mmyolo_vis_hooks.engine.cam import METHODS, BoxCAM
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.detectors.mmdet_dense import MMDetDenseDetector
from mmyolo_vis_hooks.testing.cam_reference import BoxScoreTarget, FlatScoresModel

# The images fill part of the input (bottom/right padding) and were resized: the head clips
# boxes to img_shape and its NMS runs on boxes rescaled to the original image.
METAS = [dict(img_shape=(120, 150), ori_shape=(240, 250), scale_factor=(0.6, 0.5),
              batch_input_shape=INPUT[2:], pad_shape=INPUT[2:])] * INPUT[0]


def random_inputs(seed: int = 1) -> torch.Tensor:
    return torch.rand(INPUT, generator=torch.Generator().manual_seed(seed)) * 2 - 1


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
@pytest.mark.parametrize('name', ['retinanet', 'fcos', 'ssdlite'])
def test_gradcam_equals_grad_cam_on_the_same_candidate(name):
    """Per box, our GradCAM (target ``log_score``: the gradient of the score) and grad-cam's
    GradCAM on the flat candidate scores with a target selecting the box's (prior, class)."""
    import pytorch_grad_cam as gc
    model = random_mmdet_model(name)
    inputs = random_inputs(3)[:1]
    wrapper = FlatScoresModel(model)
    try:
        result = BoxCAM(model, 'gradcam', score_thr=0.0, topk=3, target='log_score')(inputs)[0]
        assert len(result) == 3
        reference = gc.GradCAM(wrapper, list(wrapper.taps))
        for k, (prior, label) in enumerate(zip(result.detections.priors,
                                               result.detections.labels)):
            theirs = reference(inputs, targets=[BoxScoreTarget(int(prior), int(label))])[0]
            ours = result.box_maps()[k].numpy()
            if not ours.any():  # a 1x1 level: its map is one value, zero for both
                assert not theirs.any() and result.reasons[k], k
                continue
            corr = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
            assert corr > 0.999, (k, corr)
        reference.activations_and_grads.release()
    finally:
        model.zero_grad(set_to_none=True)  # grad-cam's backward filled parameter .grad
        model.eval()


@pytest.mark.slow
@pytest.mark.parametrize('name', ['retinanet', 'fcos'])
def test_every_method_explains_mmdet_boxes_and_leaves_the_model_alone(name):
    model = random_mmdet_model(name)
    inputs = random_inputs(5)[:1]
    model.train()  # a state to restore
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    try:
        for method in METHODS:
            options = dict(num_masks=64, batch_size=16) if method == 'drise' else {}
            if method == 'ablationcam':
                options = dict(batch_size=64, ratio_channels_to_ablate=0.25)
            result = BoxCAM(model, method, score_thr=0.0, topk=2, **options)(inputs, METAS[:1])[0]
            assert len(result) == 2, method
            maps = result.box_maps()
            assert maps.shape == (2, *INPUT[2:]) and torch.isfinite(maps).all(), method
            assert result.reliable.any(), (method, result.reasons)
        assert [m.training for m in model.modules()] == modes
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()

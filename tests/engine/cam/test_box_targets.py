"""Box targets (``'logit'`` vs ``'log_score'``) and the noise rule (engine/cam/reliability.py).

Saturation is built into the trained demo detector: the objectness and class-0 biases of every
prior are raised by ``shift``, so every prior scores exactly 1.0 for class 0 (as random-init
models of every family often do) and ``d log_score / d logit = sigmoid(-logit)`` is subnormal
(shift 100) or exactly 0 (shift 200) in float32, while the boxes stay those of the trained
box branch.
"""

import pytest
import torch

from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.detectors import explainable_detector
from mmyolo_vis_hooks.engine.cam.methods import GradCAM, LayerContext
from mmyolo_vis_hooks.engine.cam.reliability import (FLOAT32_TINY, at_noise_level,
                                                     box_reasons)
from mmyolo_vis_hooks.testing.cam_reference import demo_input, saturated_model


def _channel_pairs(seed=0):
    """Activations whose odd channels are the even ones / 3 (rounded to float32)."""
    gen = torch.Generator().manual_seed(seed)
    act = torch.rand(32, 8, 8, generator=gen) + 0.5
    act[1::2] = act[0::2] / 3
    return act


def test_cancelling_map_is_noise_and_a_real_map_is_not():
    """Grad-CAM weights (1, -3) on channel pairs (a, a/3) cancel exactly in real arithmetic:
    what is left is float32 rounding, which the rule calls noise whatever the gradient scale.
    The same map with one weight changed by 0.1 is real."""
    act = _channel_pairs()
    grads = torch.ones(2, 32, 8, 8)
    grads[:, 1::2] = -3.0
    grads[1, 0] += 0.1  # box 1: one channel no longer cancels
    for scale in (1.0, 1e-30):  # the rule is relative: a tiny but normal gradient is fine
        ctx = LayerContext(act, grads * scale, torch.ones(2, 8, 8, dtype=torch.bool))
        raw, magnitude = GradCAM().map_and_magnitude(ctx)
        assert float(raw[0].abs().max()) > 0  # rounding left something to stretch to [0, 1]
        assert at_noise_level(raw, magnitude).tolist() == [True, False], scale
    # A constant map has nothing to show, however large.
    assert at_noise_level(torch.full((1, 4, 4), 5.0), torch.ones(1, 4, 4)).tolist() == [True]


def test_box_reasons_name_the_failure():
    noise = torch.tensor([[True, True], [True, False], [True, False], [True, False]])
    peak = torch.tensor([1.0, 0.0, FLOAT32_TINY / 4, 1.0])
    noise[3] = True
    reasons = box_reasons(noise, peak)
    assert reasons[0].startswith('noise: on every target layer')
    assert reasons[1].startswith('zero gradient')
    assert reasons[2].startswith('subnormal gradient')
    assert reasons[3].startswith('noise')
    assert box_reasons(noise[1:3], None) == ['', '']  # gradient-free: layers decide


@pytest.mark.slow
def test_logit_target_is_the_sum_of_the_logits_behind_the_score(demo_detector):
    inputs = demo_input(demo_detector, 160)
    with torch.no_grad():
        outputs = demo_detector.bbox_head(demo_detector.extract_feat(inputs))
        preds = explainable_detector(demo_detector).candidates(inputs)
    cls, obj = outputs[0][0], outputs[2][0]  # level 0: (B, A*C, h, w), (B, A, h, w)
    cls = cls.permute(0, 2, 3, 1).reshape(1, -1, 3)
    obj = obj.permute(0, 2, 3, 1).reshape(1, -1, 1)
    n = cls.shape[1]
    assert torch.allclose(preds.logits[:, :n], cls + obj)
    assert torch.allclose(preds.scores[:, :n], cls.sigmoid() * obj.sigmoid())


@pytest.mark.slow
@pytest.mark.parametrize('method', ['gradcam', 'layercam'])
def test_saturated_boxes_log_score_is_refused_logit_is_not(demo_detector, method):
    inputs = demo_input(demo_detector, 320)
    results = {}
    for shift in (100.0, 200.0):
        model = saturated_model(demo_detector, shift)
        for target in ('log_score', 'logit'):
            result = BoxCAM(model, method, score_thr=0.3, topk=3, target=target)(inputs)[0]
            assert len(result) == 3
            assert (result.detections.scores == 1.0).all()  # saturated in float32
            results[shift, target] = result
    # log_score: sigmoid(-100) = 3.7e-44 is subnormal, sigmoid(-200) is 0
    for shift, reason in ((100.0, 'subnormal gradient'), (200.0, 'zero gradient')):
        result = results[shift, 'log_score']
        assert all(r.startswith(reason) for r in result.reasons), result.reasons
        assert not result.reliable.any()
        assert float(result.box_maps().abs().max()) == 0.0  # no picture of noise
        assert result.unreliable_messages(('circle', 'square', 'triangle'))[0].startswith(
            f'box #0 (label circle, score 1.0000) has no CAM, {reason}')
    # logit: the gradient does not depend on the bias at all: same boxes, same maps
    low, high = results[100.0, 'logit'], results[200.0, 'logit']
    assert low.reasons == high.reasons == ['', '', '']
    assert torch.equal(low.detections.priors, high.detections.priors)
    for a, b in zip(low.layer_maps, high.layer_maps):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(a.abs().max()))
    maps = high.box_maps()
    assert all(float(m.max() - m.min()) > 0.5 for m in maps)


@pytest.mark.slow
def test_target_option_is_checked(demo_detector):
    with pytest.raises(ValueError, match="target must be one of 'logit', 'log_score'"):
        BoxCAM(demo_detector, target='score')
    with pytest.raises(TypeError, match='target must be one of'):
        BoxCAM.check_options(target=None)

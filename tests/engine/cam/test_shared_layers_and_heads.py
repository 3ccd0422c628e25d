"""Box CAMs on a layer that runs once per pyramid level (RTMDet's shared head convolutions), and
the head check: MMYOLO's own head classes only, not MMDetection's namesakes or subclasses."""
import pytest
import torch
from torch import nn

from conftest import packaged_config
from mmyolo_vis_hooks.engine.cam import BoxCAM, detector_family
from mmyolo_vis_hooks.engine.cam.engine import _ReplaceOutput
from mmyolo_vis_hooks.runtime.models import build_detector
from mmyolo_vis_hooks.testing.cam_reference import calibrate_batchnorm

RTMDET = 'rtmdet/rtmdet_tiny_syncbn_fast_8xb32-300e_coco.py'
HEAD = 'bbox_head.head_module'
SHARED_CLS_CONV = f'{HEAD}.cls_convs[0][1].conv'
SHARED_REG_CONV = f'{HEAD}.reg_convs[0][1].conv'
INPUT = (1, 3, 128, 160)


@pytest.fixture(scope='module')
def rtmdet():
    """Random-init RTMDet-tiny with BN statistics refitted on random inputs (scores that vary,
    not saturated)."""
    torch.manual_seed(0)
    model = build_detector(packaged_config(RTMDET))
    calibrate_batchnorm(model, INPUT)
    return model.eval()


def _inputs():
    return torch.rand(INPUT, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.slow
def test_gradient_cam_explains_each_call_of_a_shared_conv(rtmdet):
    """Each call of the shared conv is its own layer output with its own gradient: a box's
    score depends only on the call of its own level."""
    cam = BoxCAM(rtmdet, 'gradcam', [SHARED_CLS_CONV], score_thr=0.0, topk=6)
    assert cam.probe_target_layers() == {}
    (result, ) = cam(_inputs())
    assert result.layer_keys == [f'{SHARED_CLS_CONV}@{level}' for level in range(3)]
    assert [tuple(m.shape[-2:]) for m in result.layer_maps] == [(16, 20), (8, 10), (4, 5)]
    levels = result.detections.levels.tolist()
    assert len(levels) == 6
    for k, level in enumerate(levels):
        nonzero = [bool(layer[k].abs().sum() > 0) for layer in result.layer_maps]
        assert nonzero == [call == level for call in range(3)], (k, level, nonzero)
    assert torch.isfinite(result.box_maps()).all()


@pytest.mark.slow
def test_gradient_free_cams_on_a_shared_conv(rtmdet):
    for method in ('eigencam', 'ablationcam'):
        cam = BoxCAM(rtmdet, method, [SHARED_CLS_CONV], score_thr=0.0, topk=1,
                     ratio_channels_to_ablate=0.05)
        (result, ) = cam(_inputs())
        assert result.layer_keys == [f'{SHARED_CLS_CONV}@{level}' for level in range(3)]
        assert len(result) == 1 and torch.isfinite(result.box_maps()).all(), method


@pytest.mark.slow
def test_probe_names_each_call_of_a_layer_the_scores_do_not_use(rtmdet):
    """MMYOLO's RTMDet head scores boxes from its classification branch only: its shared
    box-regression conv does not feed the scores, at any level."""
    problems = BoxCAM(rtmdet, 'eigencam', [SHARED_CLS_CONV, SHARED_REG_CONV]).probe_target_layers()
    assert list(problems) == [f'{SHARED_REG_CONV}@{level}' for level in range(3)]
    assert all('does not feed the box scores' in why for why in problems.values())


def test_ablation_replaces_only_the_chosen_call():
    conv = nn.Conv2d(1, 1, 1)
    xs = [torch.randn(1, 1, 4, 4) for _ in range(3)]
    with torch.no_grad():
        plain = [conv(x) for x in xs]
        with _ReplaceOutput(conv, 0, call=1) as swap:
            swap.value = torch.zeros(1, 1, 4, 4)
            swapped = [conv(x) for x in xs]
    assert torch.equal(swapped[0], plain[0]) and torch.equal(swapped[2], plain[2])
    assert torch.equal(swapped[1], torch.zeros(1, 1, 4, 4))


@pytest.mark.slow
@pytest.mark.parametrize('head_type', ['YOLOXHead', 'RTMDetHead'])
def test_mmdetection_heads_of_the_same_name_are_refused(rtmdet, head_type):
    """MMDetection's YOLOXHead/RTMDetHead share the names of MMYOLO's heads but not their
    outputs: a clear ValueError at construction (the name check let them through to an
    AttributeError)."""
    from mmdet.models import dense_heads as mmdet_heads
    from mmengine.registry import DefaultScope
    model = build_detector(packaged_config(RTMDET))
    with DefaultScope.overwrite_default_scope('mmdet'):  # its losses are mmdet's
        model.bbox_head = getattr(mmdet_heads, head_type)(num_classes=80, in_channels=96)
    with pytest.raises(ValueError, match=(
            rf"box CAMs support exactly MMYOLO's heads .*; mmdet\.models\.dense_heads\.\w+\."
            rf"{head_type} is not MMYOLO's mmyolo\.models\.dense_heads\.\w+\.{head_type} "
            rf"\(same name, other outputs and box decoding\)")):
        BoxCAM(model)
    assert detector_family(rtmdet) == 'rtmdet'


@pytest.mark.slow
def test_subclasses_of_mmyolo_heads_are_refused():
    model = build_detector(packaged_config(RTMDET))
    head_type = type(model.bbox_head)
    model.bbox_head.__class__ = type('RTMDetPoseLikeHead', (head_type, ), {})
    with pytest.raises(ValueError, match=r'RTMDetPoseLikeHead subclasses RTMDetHead, but a '
                                         r'subclass may return more outputs'):
        BoxCAM(model)

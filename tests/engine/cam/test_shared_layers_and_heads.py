"""Box CAMs on a layer that runs once per pyramid level (RTMDet's shared head convolutions), and
which adapter a head gets: by its class hierarchy, not its name."""
import copy

import pytest
import torch
from torch import nn

from helpers import packaged_config
from mmyolo_vis_hooks.engine.cam import BoxCAM
from mmyolo_vis_hooks.engine.detectors import explainable_detector
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
def test_mmdetection_heads_of_the_same_name_get_their_own_kind(rtmdet):
    """MMDetection's RTMDetHead/YOLOXHead share the names of MMYOLO's heads but not their
    outputs: the class hierarchy, not the name, picks the adapter. MMDetection's RTMDetHead
    decodes like BaseDenseHead (MMDetection's dense kind), its YOLOXHead has an adapter of its
    own, and so has CenterNet's heatmap head; a head with a decoding of its own and no adapter
    (CornerNet's) is refused at construction, naming it."""
    from mmdet.models import dense_heads as mmdet_heads
    from mmengine.registry import DefaultScope
    from mmyolo_vis_hooks.engine.detectors.centernet import CenterNetDetector
    from mmyolo_vis_hooks.engine.detectors.mmdet_dense import MMDetDenseDetector
    from mmyolo_vis_hooks.engine.detectors.mmdet_yolo import YOLOXDetector
    from mmyolo_vis_hooks.engine.detectors.mmyolo_dense import MMYOLODenseDetector
    model = build_detector(packaged_config(RTMDET))
    with DefaultScope.overwrite_default_scope('mmdet'):  # its losses are mmdet's
        model.bbox_head = mmdet_heads.RTMDetHead(num_classes=80, in_channels=96)
    assert isinstance(explainable_detector(model), MMDetDenseDetector)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model.bbox_head = mmdet_heads.YOLOXHead(num_classes=80, in_channels=96)
    assert isinstance(explainable_detector(model), YOLOXDetector)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model.bbox_head = mmdet_heads.CenterNetHead(in_channels=96, feat_channels=16,
                                                    num_classes=80)
    assert isinstance(explainable_detector(model), CenterNetDetector)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model.bbox_head = mmdet_heads.CornerHead(num_classes=80, in_channels=96)
    with pytest.raises(ValueError, match=(
            r"mmdet\.models\.dense_heads\.\w+\.CornerHead decodes with CornerHead's own "
            r"post-processing, which has no adapter yet: no box CAMs for this kind; box CAMs "
            r"support MMYOLO's dense heads ")):
        BoxCAM(model)
    assert isinstance(explainable_detector(rtmdet), MMYOLODenseDetector)


@pytest.mark.slow
def test_subclasses_of_mmyolo_heads_are_explained_like_their_base(rtmdet):
    """A user's subclass of a supported head gets its base's adapter (same boxes, same maps);
    a subclass with a decoding of its own (as mask, rotated and pose heads have) is refused."""
    model = copy.deepcopy(rtmdet)
    head_type = type(model.bbox_head)
    model.bbox_head.__class__ = type('MyRTMDetHead', (head_type, ), {})
    inputs = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = BoxCAM(model, score_thr=0.0, topk=3)(inputs)[0]
    base = BoxCAM(rtmdet, score_thr=0.0, topk=3)(inputs)[0]
    assert torch.equal(ours.detections.priors, base.detections.priors)
    assert all(torch.equal(a, b) for a, b in zip(ours.layer_maps, base.layer_maps))
    model.bbox_head.__class__ = type('RTMDetPoseLikeHead', (head_type, ), {
        'predict_by_feat': lambda self, *args, **kwargs: None})
    with pytest.raises(ValueError, match=r'RTMDetPoseLikeHead subclasses RTMDetHead with a '
                                         r'decoding of its own'):
        BoxCAM(model)

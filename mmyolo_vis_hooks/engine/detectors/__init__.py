"""Detectors we can explain: one contract (:mod:`.base`), one file per detector kind.

:func:`explainable_detector` finds a model's adapter from the class hierarchy of its head: the
nearest supported class in the head's MRO decides, so a user's subclass of a supported head is
explained like its base, unless it replaces the head's decoding (rotated boxes and keypoints
subclass the box heads with other outputs). Instance-segmentation kinds also give each
detection its mask (``ExplainedBoxes.masks``). Every other detector is refused with
one line naming its kind and what is supported.
"""
import importlib
from typing import Tuple

from mmengine.model import is_model_wrapper
from torch import nn

from .base import (ExplainableDetector, ExplainedBoxes, FlatPredictions,
                   UnsupportedDetectorError, matched_log_scores)

SUPPORTED_KINDS = ('MMYOLO\'s dense heads (YOLOv5Head, YOLOv6Head, YOLOv7Head, YOLOv8Head, '
                   'YOLOXHead, RTMDetHead, PPYOLOEHead) and instance-segmentation heads '
                   '(YOLOv5InsHead, RTMDetInsSepBNHead), its rotated head (RTMDetRotatedHead, '
                   'with mmrotate 1.x) and pose head (YOLOXPoseHead, with mmpose 1.x), and '
                   'MMDetection\'s dense heads that '
                   'decode with BaseDenseHead.predict_by_feat (RetinaNet, FCOS, ATSS, FSAF, '
                   'AutoAssign, DDOD, VFNet, YOLOF, SSD, CenterNet-update, RTMDet and their '
                   'variants) or are GFL, LD, TOOD, PAA, LAD, FoveaBox, RepPoints, SABL '
                   'RetinaNet, YOLOv3, MMDetection\'s YOLOX, CenterNet or an RPN alone, its '
                   'RTMDet-ins (RTMDetInsHead, '
                   'RTMDetInsSepBNHead), YOLACT, CondInst, BoxInst, SOLO and SOLOv2, and '
                   'MMDetection\'s two-stage detectors with a standard or cascade RoI head '
                   '(Faster/Mask R-CNN, Cascade R-CNN, HTC, SCNet, Libra, Dynamic, Double-Head, '
                   'PISA, MS R-CNN, PointRend, SABL\'s bucketing box head, TridentNet\'s test '
                   'branch, Seesaw loss scores) or a grid RoI head (Grid R-CNN), Sparse R-CNN '
                   'and QueryInst, MMDetection\'s DETR family (DETR, Deformable DETR, '
                   'Conditional DETR, DAB-DETR, DINO, DDQ-DETR), and MaskFormer and '
                   'Mask2Former with instance results (test_cfg.instance_on)')


def _qualified_name(cls: type) -> str:
    return f'{cls.__module__}.{cls.__qualname__}'


def _mmyolo_heads(kind: str) -> Tuple[type, ...]:
    """The MMYOLO head classes the kind module ``kind`` (``mmyolo_dense``,
    ``mmyolo_instance``, ``rotated``, ``pose``) explains; none without MMYOLO (optional)."""
    try:
        return importlib.import_module(f'{__name__}.{kind}').head_classes()
    except ImportError:
        return ()


def _kind_of_other(model: nn.Module) -> str:
    """What a detector without a supported dense head is, for the refusal."""
    name = type(model).__name__
    if getattr(model, 'roi_head', None) is not None or hasattr(model, 'rpn_head'):
        return f'{name} is a two-stage (RoI) detector'
    if hasattr(model, 'decoder') and hasattr(model, 'bbox_head') and \
            hasattr(model, 'num_queries'):
        return f'{name} is a DETR-style (query) detector'
    if getattr(model, 'panoptic_head', None) is not None:  # MaskFormer, Mask2Former
        return (f'{name} is a query-based mask segmentor without instance results (a '
                f'MaskFormer/Mask2Former gives them with test_cfg.instance_on=True and '
                f'MaskFormerFusionHead\'s own post-processing)')
    if getattr(model, 'bbox_head', None) is None:
        mask_head = getattr(model, 'mask_head', None)
        if mask_head is not None:  # decoupled SOLO: x and y masks per cell
            return (f'{name} has no bbox_head and its mask head '
                    f'{_qualified_name(type(mask_head))} decodes its own way')
        return f'{name} has no bbox_head'
    return f'{name}\'s head {_qualified_name(type(model.bbox_head))} is not one of them'


def unsupported(what: str) -> UnsupportedDetectorError:
    """The refusal of a kind without an adapter: what the model is first (a long list of what
    is supported would hide it), then what is supported."""
    return UnsupportedDetectorError(f'{what}: no box CAMs for this kind; box CAMs support '
                                    f'{SUPPORTED_KINDS}')


def explainable_detector(model: nn.Module) -> ExplainableDetector:
    """The adapter that explains ``model`` (wrappers are unwrapped).

    Raises:
        UnsupportedDetectorError: No adapter for the model's kind (the message names the kind
            and what is supported).
    """
    if isinstance(model, ExplainableDetector):  # engines may share one adapter
        return model
    if is_model_wrapper(model):
        model = model.module
    from mmdet.models.detectors import TwoStageDetector as MMDetTwoStage
    from .sparse_rcnn import SparseRCNNDetector, is_sparse_rcnn
    if is_sparse_rcnn(model):  # learned proposals, stages of a SparseRoIHead (a cascade's)
        return SparseRCNNDetector(model)
    if isinstance(model, MMDetTwoStage) and getattr(model, 'with_rpn', False) and \
            getattr(model, 'with_bbox', False):
        from .two_stage import TwoStageDetector, roi_head_kind
        if roi_head_kind(model.roi_head) is not None:
            return TwoStageDetector(model)
        raise unsupported(f'{type(model).__name__}\'s RoI head '
                          f'{_qualified_name(type(model.roi_head))} predicts boxes its own way '
                          f'(no adapter yet)')
    from mmdet.models.detectors import DetectionTransformer
    if isinstance(model, DetectionTransformer):
        from .detr import DETRDetector
        return DETRDetector(model)
    if getattr(model, 'panoptic_head', None) is not None:
        from .maskformer import MaskFormerDetector, has_maskformer_instances
        if has_maskformer_instances(model):
            return MaskFormerDetector(model)
        raise unsupported(_kind_of_other(model))
    from .solo import SOLODetector, has_solo_decoding
    if has_solo_decoding(model):  # no box head: grid cells of a mask head
        return SOLODetector(model)
    head = getattr(model, 'bbox_head', None)
    if head is None or not hasattr(model, 'extract_feat') or \
            getattr(model, 'roi_head', None) is not None or hasattr(model, 'num_queries'):
        raise unsupported(_kind_of_other(model))
    mmyolo_heads, instance_heads, rotated_heads, pose_heads = (
        _mmyolo_heads(kind) for kind in ('mmyolo_dense', 'mmyolo_instance', 'rotated', 'pose'))

    def own_decoding(base: type) -> UnsupportedDetectorError:
        return unsupported(f'{_qualified_name(type(head))} subclasses {base.__name__} with a '
                           f'decoding of its own')
    for cls in type(head).__mro__:
        if cls in rotated_heads:
            from .rotated import MMYOLORotatedDetector, has_rotated_decoding
            if not has_rotated_decoding(head):
                raise own_decoding(cls)
            return MMYOLORotatedDetector(model)
        if cls in pose_heads:
            from .pose import PoseDetector
            return PoseDetector(model)
        if cls in instance_heads:
            from .mmyolo_instance import MMYOLOInstanceDetector
            return MMYOLOInstanceDetector(model)
        if cls in mmyolo_heads:
            from .mmyolo_dense import MMYOLODenseDetector, has_standard_decoding
            if not has_standard_decoding(head):
                raise own_decoding(cls)
            return MMYOLODenseDetector(model)
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    if isinstance(head, BaseDenseHead):
        from . import mmdet_dense, mmdet_yolo
        from .mmdet_instance import (MMDetInstanceDetector, YOLACTDetector,
                                     has_rtmdet_ins_decoding, has_yolact_decoding)
        if has_rtmdet_ins_decoding(head):
            return MMDetInstanceDetector(model)
        if has_yolact_decoding(model):
            return YOLACTDetector(model)
        from .condinst import CondInstDetector, has_condinst_decoding
        if has_condinst_decoding(model):
            return CondInstDetector(model)
        from . import centernet
        adapters = {**mmdet_dense.adapter_classes(), **mmdet_yolo.adapter_classes(),
                    **centernet.adapter_classes()}
        # the nearest head class with an adapter decides, if the head decodes like it
        base = next(c for c in type(head).__mro__ if c in adapters)
        if mmdet_dense.decodes_like(type(head), base):
            return adapters[base](model)
        own = next(c for c in type(head).__mro__ if any(
            name in vars(c) for name in ('predict_by_feat', '_predict_by_feat_single',
                                         '_bbox_post_process')))
        raise unsupported(f'{_qualified_name(type(head))} decodes with {own.__name__}\'s own '
                          f'post-processing, which has no adapter yet')
    raise unsupported(_kind_of_other(model))


__all__ = ['ExplainableDetector', 'ExplainedBoxes', 'FlatPredictions', 'SUPPORTED_KINDS',
           'UnsupportedDetectorError', 'explainable_detector', 'matched_log_scores']

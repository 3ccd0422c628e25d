"""Test pipelines of MMYOLO configs: where to find them, the network input size they produce,
and their resize-only variant (``align='resize'``).

Every MMYOLO family letterboxes differently at test time (packaged configs):

- YOLOv5/v6/v7/v8 and RTMDet: ``YOLOv5KeepRatioResize(scale)`` + ``LetterResize(scale)``
  (centred pad, ``pad_param`` in the metainfo);
- YOLOX: ``mmdet.Resize(scale, keep_ratio=True)`` + ``mmdet.Pad`` (bottom/right pad);
- PPYOLOE: ``mmdet.FixShapeResize(width, height, keep_ratio=False, interpolation='bicubic')``.

The resize-only variant swaps all of them for one resize to the same input size that does not
keep the ratio, with the interpolation the replaced step would have used, so input and image
share their aspect.

MMDetection's own test pipelines do not letterbox: ``Resize(scale=(1333, 800),
keep_ratio=True)`` (``scale`` bounds the long and the short side) gives each image its own input
size, and only the data preprocessor pads, at the bottom and right, to the batch's largest
image and to ``pad_size_divisor``. There is no fixed input to stretch into, so their resize-only
variant is the pipeline itself: in both align modes a map is carried back through
``scale_factor`` and ``batch_input_shape`` (``engine.core.geometry.map_to_original``).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet.datasets.transforms import Resize

from ...requirements import mmyolo_available

ALIGN_MODES = ('letterbox', 'resize')

# Test-time steps that keep the aspect ratio and/or pad; swapped for one resize-only step.
LETTERBOX_TRANSFORMS = ('YOLOv5KeepRatioResize', 'LetterResize', 'Pad', 'FixShapeResize',
                        'PPYOLOERandomCrop')
RESIZES = ('Resize', )
# Annotation loading: nothing to load beside a bare image (the panoptic one also needs
# panopticapi installed just to be built).
ANNOTATION_LOADING = ('LoadAnnotations', 'LoadPanopticAnnotations')
LOADING_TRANSFORMS = ('LoadImageFromFile', 'LoadImageFromNDArray', *ANNOTATION_LOADING,
                      'PackDetInputs', 'LoadMultiChannelImageFromFiles')


def check_align(align: str) -> str:
    """Returns ``align`` if it is one of :data:`ALIGN_MODES`, else raises ValueError."""
    if align not in ALIGN_MODES:
        raise ValueError(f'align must be one of {ALIGN_MODES}, got {align!r}')
    return align


def transform_type(step: Dict) -> str:
    """The transform's type without registry scope: ``'mmdet.Resize'`` -> ``'Resize'``."""
    kind = step.get('type', '')
    kind = kind if isinstance(kind, str) else getattr(kind, '__name__', str(kind))
    return kind.split('.')[-1]


def test_pipeline_cfg(cfg) -> List[Dict]:
    """The config's test pipeline (``test_dataloader.dataset.pipeline``, else
    ``test_pipeline``), as a deep copy.

    Raises:
        ValueError: The config has neither.
    """
    pipeline = (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline') or \
        cfg.get('test_pipeline')
    if not pipeline:
        raise ValueError('the config has no test pipeline (test_dataloader.dataset.pipeline or '
                         'test_pipeline)')
    return [copy.deepcopy(dict(step)) for step in pipeline]


def without_loading(pipeline: Sequence[Dict], keep_image_loading: bool = False) -> List[Dict]:
    """The pipeline without annotation loading and packing (and image loading unless
    ``keep_image_loading``)."""
    dropped = set(LOADING_TRANSFORMS)
    if keep_image_loading:
        dropped -= {'LoadImageFromFile', 'LoadImageFromNDArray', 'PackDetInputs'}
    return [copy.deepcopy(dict(s)) for s in pipeline if transform_type(s) not in dropped]


def input_scale(pipeline: Sequence[Dict]) -> Optional[Tuple[int, int]]:
    """``(w, h)`` of the network input a test pipeline produces, from its first resize or
    letterbox step (``scale=`` or ``width=``/``height=``); None when there is none."""
    for step in pipeline:
        if transform_type(step) not in LETTERBOX_TRANSFORMS + RESIZES:
            continue
        if step.get('scale') is not None:
            scale = step['scale']
            return (int(scale), int(scale)) if isinstance(scale, (int, float)) else \
                tuple(int(v) for v in scale)
        if step.get('width') is not None and step.get('height') is not None:
            return int(step['width']), int(step['height'])
    return None


def config_input_size(cfg, default: Tuple[int, int] = (640, 640)) -> Tuple[int, int]:
    """``(w, h)`` of the network input of a config's test pipeline (``default`` if unknown)."""
    try:
        return input_scale(test_pipeline_cfg(cfg)) or default
    except ValueError:
        return default


class YOLOv5StretchResize(Resize):
    """``mmdet.Resize(scale, keep_ratio=False)`` that interpolates as ``YOLOv5KeepRatioResize``
    would on the same image: ``'area'`` when its keep-ratio resize shrinks the image,
    ``'bilinear'`` when it enlarges it (MMYOLO's rule; one fixed interpolation cannot follow
    it). The resize-only variant of the YOLOv5/v6/v7/v8 and RTMDet test pipelines.

    Args:
        scale (int | tuple[int, int]): ``(w, h)`` of the output.
    """

    def __init__(self, scale, **kwargs) -> None:
        if 'interpolation' in kwargs:
            raise TypeError('YOLOv5StretchResize chooses its interpolation per image; do not '
                            'pass interpolation=')
        super().__init__(scale=scale, keep_ratio=False, **kwargs)

    def _resize_img(self, results: dict) -> None:
        from mmyolo.datasets.transforms import YOLOv5KeepRatioResize
        image = results.get('img')
        if image is not None:
            ratio = YOLOv5KeepRatioResize._get_rescale_ratio(image.shape[:2], self.scale)
            self.interpolation = 'area' if ratio < 1 else 'bilinear'
        super()._resize_img(results)


if mmyolo_available():  # MMYOLO is optional; only its letterbox steps are replaced by this one
    from mmyolo.registry import TRANSFORMS
    TRANSFORMS.register_module(module=YOLOv5StretchResize)


def _pads_to_size_divisor_only(step: Dict) -> bool:
    """A ``Pad`` to a multiple of ``size_divisor`` (bottom/right), not to a fixed size."""
    return transform_type(step) == 'Pad' and step.get('size') is None and \
        not step.get('pad_to_square')


def letterboxes(pipeline: Sequence[Dict]) -> bool:
    """Whether a test pipeline fits images into one fixed input size (resize with or without
    the ratio, then pad): MMYOLO's pipelines do; MMDetection's ``Resize(keep_ratio=True)``,
    with at most a ``Pad(size_divisor=...)``, does not."""
    return any(transform_type(s) in LETTERBOX_TRANSFORMS and not _pads_to_size_divisor_only(s)
               for s in pipeline)


def _resize_only_step(step: Dict, scale: Tuple[int, int]) -> Dict:
    """The plain resize replacing a letterbox step, interpolating as that step does."""
    if transform_type(step) == 'YOLOv5KeepRatioResize':
        return dict(type='mmyolo.YOLOv5StretchResize', scale=tuple(scale))
    resize = dict(type='mmdet.Resize', scale=tuple(scale), keep_ratio=False)
    if step.get('interpolation'):
        resize['interpolation'] = step['interpolation']
    return resize


def resize_only_pipeline(pipeline: Sequence[Dict],
                         scale: Optional[Tuple[int, int]] = None) -> List[Dict]:
    """A copy of a test pipeline with its letterbox steps replaced by one plain resize.

    The first letterbox (or keep-ratio resize) step becomes ``mmdet.Resize(scale,
    keep_ratio=False)`` with that step's interpolation (``YOLOv5KeepRatioResize``, which picks
    it per image, becomes :class:`YOLOv5StretchResize`); the other letterbox steps are dropped.
    ``scale_factor`` is then per axis and there is no padding, so maps need only be rescaled.
    A pipeline that does not letterbox (:func:`letterboxes`: MMDetection's keep-ratio
    ``Resize``, whose only padding is the data preprocessor's, at the bottom/right) is
    returned as it is (with ``scale``, when given, as its resize's bound). The given pipeline
    is not modified.

    Args:
        pipeline (list[dict]): Transform configs (e.g. ``cfg.val_dataloader.dataset.pipeline``).
        scale (tuple[int, int], optional): ``(w, h)`` of the network input. Taken from the
            pipeline (:func:`input_scale`) when None.

    Raises:
        ValueError: No scale is given and none can be read from the pipeline, or the pipeline
            does not load images.
    """
    explicit_scale = scale
    scale = scale or input_scale(pipeline)
    if scale is None:
        raise ValueError('cannot find the input scale in the pipeline (no resize step with '
                         'scale= or width=/height=); pass scale=(w, h)')
    if not any('LoadImage' in transform_type(s) for s in pipeline):
        raise ValueError('the pipeline has no image loading step (e.g. LoadImageFromFile)')
    keep_ratio = [i for i, s in enumerate(pipeline)
                  if transform_type(s) in RESIZES and s.get('keep_ratio')]
    if keep_ratio and not letterboxes(pipeline):
        out = [copy.deepcopy(dict(s)) for s in pipeline]
        if explicit_scale is not None:
            out[keep_ratio[0]]['scale'] = tuple(explicit_scale)
        return out
    out: List[Dict] = []
    replaced = False
    for step in pipeline:
        kind = transform_type(step)
        if kind in LETTERBOX_TRANSFORMS or (kind in RESIZES and step.get('keep_ratio')):
            if not replaced:
                out.append(_resize_only_step(step, scale))
                replaced = True
            continue
        step = copy.deepcopy(step)
        if kind == 'PackDetInputs':
            keys = tuple(k for k in step.get('meta_keys', ()) if k != 'pad_param')
            step['meta_keys'] = keys + tuple(k for k in ('scale_factor', ) if k not in keys)
        out.append(step)
    if not replaced:
        out.insert(1, dict(type='mmdet.Resize', scale=tuple(scale), keep_ratio=False))
    return out

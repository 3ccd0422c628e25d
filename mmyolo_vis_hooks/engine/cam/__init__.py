"""Box-level class activation maps for every detector of ``engine.detectors``.

``BoxCAM(model, method='gradcam')(inputs)`` explains the top-k boxes of each image with one map
per box; ``compose`` turns them into image maps (``norm_in_bbox``, ``merge_box_maps``).
"""
from .compose import (compose_box_maps, energy_inside, merge_box_maps, norm_in_bbox,
                      normalize_maps)
from .engine import DEFAULT_TARGET, TARGETS, BoxCAM, BoxCAMResult, target_layer_error
from .methods import (DRISE, METHODS, AblationCAM, BoxCAMMethod, ChannelWeightedMethod,
                      EigenCAM, EigenGradCAM, GradCAM, GradCAMPlusPlus, InputContext,
                      InputMethod, LayerCAM, LayerContext, XGradCAM, build_method)
from .projection import first_component_projection
from .reliability import NOISE_FACTOR, at_noise_level, box_reasons

__all__ = [
    'BoxCAM', 'BoxCAMResult', 'DEFAULT_TARGET', 'TARGETS',
    'target_layer_error', 'NOISE_FACTOR', 'at_noise_level', 'box_reasons', 'METHODS',
    'BoxCAMMethod', 'ChannelWeightedMethod', 'GradCAM', 'GradCAMPlusPlus', 'XGradCAM', 'LayerCAM',
    'EigenGradCAM', 'EigenCAM', 'AblationCAM', 'DRISE', 'InputMethod', 'InputContext',
    'LayerContext', 'build_method',
    'first_component_projection', 'compose_box_maps', 'energy_inside',
    'merge_box_maps', 'norm_in_bbox', 'normalize_maps'
]

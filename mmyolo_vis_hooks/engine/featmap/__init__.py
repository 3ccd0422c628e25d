"""Feature maps: capture of target layers, channel reduction, drawing, statistics."""
from .capture import (CapturedSample, captured_from_output, check_feature_maps,
                      forward_and_capture, probe_feature_layers, token_levels_from_features)
from .draw import draw_layer
from .reduce import check_reduction, reduce_channels
from .stats import activation_stats

__all__ = ['CapturedSample', 'captured_from_output', 'check_feature_maps',
           'forward_and_capture', 'probe_feature_layers', 'token_levels_from_features',
           'draw_layer', 'check_reduction',
           'reduce_channels', 'activation_stats']

from .base_vis_hook import BaseVisHook, VisualizationWarning
from .featmap_vis_hook import FeatMapVisHook

__all__ = ['BaseVisHook', 'VisualizationWarning', 'FeatMapVisHook']

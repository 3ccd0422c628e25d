from .base_vis_hook import BaseVisHook, VisualizationWarning
from .featmap_vis_hook import FeatMapVisHook
# The box-CAM hook: imported here so that importing the package registers it.
from .boxam_vis_hook import BoxAMVisHook  # noqa: E402

__all__ = ['BaseVisHook', 'VisualizationWarning', 'FeatMapVisHook', 'BoxAMVisHook']

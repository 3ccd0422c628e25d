"""Feature-map and box-CAM visualization for MMYOLO training.

Importing the package registers its hooks and VisBackends into MMEngine's root registries, so
that configs name them bare in every scope (``default_scope='mmyolo'`` or ``'mmdet'``: a scope's
registry falls back on its root), and allow-lists the globals that MMEngine checkpoints carry,
so that ``torch.load(weights_only=True)`` can resume a run. MMYOLO is optional: without it the
package works on MMDetection's detectors.
"""
import warnings

# mmengine 0.10 imports pkg_resources, which setuptools deprecates with a warning on every
# import: noise a user cannot act on (and a second line on a tool's one-line error).
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from .requirements import check_mmyolo  # noqa: E402

# A clear ImportError for a broken MMYOLO or an mmcv without ops; a missing MMYOLO is fine.
check_mmyolo()

from .backends import ActivationStatsVisBackend  # noqa: E402
from .hooks import FeatMapVisHook  # noqa: E402
from .runtime.checkpoint import register_safe_globals  # noqa: E402
from .version import __version__  # noqa: E402

register_safe_globals()

__all__ = ['__version__', 'register_safe_globals', 'FeatMapVisHook', 'ActivationStatsVisBackend']

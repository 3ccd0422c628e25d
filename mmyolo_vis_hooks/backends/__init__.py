from .activation_stats_backend import ActivationStatsVisBackend
from .activation_stats_mixin import ActivationStatsMixin, TrackerWarning
from .dvclive_backend import DVCLiveActivationStatsVisBackend
from .mlflow_backend import MLflowActivationStatsVisBackend
from .tensorboard_crc import install_fast_event_crc
from .wandb_backend import WandbActivationStatsVisBackend

__all__ = [
    'ActivationStatsVisBackend', 'ActivationStatsMixin', 'TrackerWarning',
    'WandbActivationStatsVisBackend', 'MLflowActivationStatsVisBackend',
    'DVCLiveActivationStatsVisBackend', 'install_fast_event_crc'
]

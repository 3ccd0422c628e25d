from .activation_stats_backend import ActivationStatsVisBackend
from .tensorboard_crc import install_fast_event_crc

__all__ = ['ActivationStatsVisBackend', 'install_fast_event_crc']

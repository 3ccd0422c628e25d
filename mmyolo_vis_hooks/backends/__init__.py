from .activation_stats_backend import ActivationStatsVisBackend

__all__ = ['ActivationStatsVisBackend']

"""A TensorBoard VisBackend that also records per-layer activation statistics."""
from typing import Dict, Optional

import numpy as np
from mmengine.registry import VISBACKENDS
from mmengine.visualization import TensorboardVisBackend

from .activation_stats_mixin import ActivationStatsMixin
from .tensorboard_crc import install_fast_event_crc


@VISBACKENDS.register_module()
class ActivationStatsVisBackend(ActivationStatsMixin, TensorboardVisBackend):
    """TensorBoard backend with ``add_activation_stats`` for ``FeatMapVisHook``.

    Everything ``TensorboardVisBackend`` logs (images, scalars, config) is logged the same way.
    In addition, per layer and step: a histogram of the activations over the chosen validation
    images (``<name>``, TensorBoard's own histogram), and the scalars ``<name>/mean``,
    ``<name>/std`` and ``<name>/dead_ratio`` (share of channels that never exceed a small
    epsilon). The WandB, MLflow and DVCLive members of the family
    (``WandbActivationStatsVisBackend``, ...) log the same statistics to their trackers;
    backends without the method are skipped by the hook for statistics.

    Example:
        >>> visualizer = dict(type='mmdet.DetLocalVisualizer', vis_backends=[
        ...     dict(type='LocalVisBackend'), dict(type='ActivationStatsVisBackend')])

    Its event writer checksums records with a C CRC-32C (``tensorboard_crc``): the same files,
    without the pure-Python checksum that otherwise costs the training loop about 17 ms per
    200 KB image. Errors propagate as with MMEngine's TensorboardVisBackend (the hooks warn).

    Args:
        save_dir (str): The root directory of the event files.
    """

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir)

    def _init_env(self) -> None:
        install_fast_event_crc()
        super()._init_env()

    def _write_activation_stats(self, name: str, values: Optional[np.ndarray],
                                scalars: Dict[str, float], step: int) -> None:
        if values is not None:
            self._tensorboard.add_histogram(name, values, step)
        for tag, value in scalars.items():
            self._tensorboard.add_scalar(tag, value, step)

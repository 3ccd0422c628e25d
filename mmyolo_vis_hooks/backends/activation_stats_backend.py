"""A TensorBoard VisBackend that also records per-layer activation statistics."""
from typing import Dict, Union

import numpy as np
from mmengine.visualization import TensorboardVisBackend
from mmengine.visualization.vis_backend import force_init_env
from mmyolo.registry import VISBACKENDS

from .tensorboard_crc import install_fast_event_crc


@VISBACKENDS.register_module()
class ActivationStatsVisBackend(TensorboardVisBackend):
    """TensorBoard backend with ``add_activation_stats`` for ``FeatMapVisHook``.

    Everything ``TensorboardVisBackend`` logs (images, scalars, config) is logged the same way.
    In addition, per layer and step: a histogram of the activations over the chosen validation
    images (``<name>``), and the scalars ``<name>/mean``, ``<name>/std`` and
    ``<name>/dead_ratio`` (share of channels that never exceed a small epsilon). Other
    backends do not have the method, and the hook simply skips them for statistics.

    Example:
        >>> visualizer = dict(type='mmdet.DetLocalVisualizer', vis_backends=[
        ...     dict(type='LocalVisBackend'), dict(type='ActivationStatsVisBackend')])

    Its event writer checksums records with a C CRC-32C (``tensorboard_crc``): the same files,
    without the pure-Python checksum that otherwise costs the training loop about 17 ms per
    200 KB image.

    Args:
        save_dir (str): The root directory of the event files.
    """

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir)

    def _init_env(self) -> None:
        install_fast_event_crc()
        super()._init_env()

    @force_init_env
    def add_activation_stats(self, name: str, stats: Dict[str, Union[float, np.ndarray]],
                             step: int = 0, **kwargs) -> None:
        """Records one layer's statistics.

        Args:
            name (str): Tag root, e.g. ``featmap_stats/neck[0]``.
            stats (dict): ``mean``, ``std``, ``dead_ratio`` (floats) and optional ``values``
                (1-D array for the histogram), as made by ``engine.featmap.activation_stats``.
            step (int): Global step (the epoch). Defaults to 0.
        """
        values = stats.get('values')
        if values is not None and np.asarray(values).size:
            self._tensorboard.add_histogram(name, np.asarray(values), step)
        for key in ('mean', 'std', 'dead_ratio'):
            if key in stats:
                self._tensorboard.add_scalar(f'{name}/{key}', float(stats[key]), step)

"""What every activation-statistics VisBackend shares: ``add_activation_stats`` and the failure
policy of a tracker.

Each member of the family is MMEngine's own backend for its tracker with this mixin in front
(``class X(ActivationStatsMixin, <MMEngine backend>)``); the mixin adds:

- ``add_activation_stats(name, stats, step)``: per layer and step the scalars ``<name>/mean``,
  ``<name>/std``, ``<name>/dead_ratio`` and a histogram of the activations. Each backend writes
  the histogram its tracker's way (``_write_activation_stats``): natively where the tracker has
  histograms (TensorBoard, WandB), else as quantile metrics plus a histogram table per step.
- a failure policy: with ``ignore_errors=True`` (the trackers' default) a failing write, a
  tracker that cannot start, and a failing ``close`` (MMEngine's ``LoggerHook.after_run``)
  warn with :class:`TrackerWarning` and training goes on. A tracker that cannot start is
  disabled for the rest of the run (one warning, no retry on every call).
"""
import functools
import warnings
from typing import Dict, Optional, Tuple, Union

import numpy as np
from mmengine.visualization.vis_backend import force_init_env

STAT_KEYS = ('mean', 'std', 'dead_ratio')
# Quantiles logged as metrics where a tracker has no histogram: name -> percentile.
QUANTILES = (('min', 0.0), ('p05', 5.0), ('p25', 25.0), ('p50', 50.0), ('p75', 75.0),
             ('p95', 95.0), ('max', 100.0))


class TrackerWarning(UserWarning):
    """A tracker backend failed to write or close; training went on."""


def tolerant(method):
    """Applies the mixin's failure policy to a backend method (put it above
    ``@force_init_env`` so that a failing ``_init_env`` is covered too)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if getattr(self, '_tracker_disabled', False):
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a tracker must not stop training
            if not getattr(self, 'ignore_errors', False):
                raise
            name = type(self).__name__
            if method.__name__ != 'close' and not getattr(self, '_env_initialized', False):
                self._tracker_disabled = True
                warnings.warn(f'{name} could not start ({type(err).__name__}: {err}); it logs '
                              f'nothing for the rest of the run', TrackerWarning)
            else:
                warnings.warn(f'{name}.{method.__name__} failed ({type(err).__name__}: '
                              f'{err}); training goes on', TrackerWarning)
            return None

    return wrapper


def histogram_table(values: np.ndarray, bins: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of ``values`` in ``bins`` equal bins (``len(edges) == bins + 1``)."""
    counts, edges = np.histogram(values, bins=bins)
    return edges, counts


def quantile_metrics(name: str, values: np.ndarray) -> Dict[str, float]:
    """``{'<name>/min': ..., '<name>/p05': ..., ..., '<name>/max': ...}`` of ``values``."""
    qs = np.percentile(values, [q for _, q in QUANTILES])
    return {f'{name}/{key}': float(v) for (key, _), v in zip(QUANTILES, qs)}


class ActivationStatsMixin:
    """``add_activation_stats`` and the failure policy for an MMEngine VisBackend.

    Put it first in the bases: ``class X(ActivationStatsMixin, WandbVisBackend)``. A subclass
    implements ``_write_activation_stats`` and sets ``ignore_errors`` in ``__init__``;
    methods it overrides itself take ``@tolerant`` above ``@force_init_env``.

    Attributes:
        ignore_errors (bool): Warn instead of raising when the tracker fails. False keeps
            MMEngine's behaviour (errors propagate). Defaults to False.
        histogram_bins (int): Bins of the histograms the mixin computes. Defaults to 64.
    """

    ignore_errors: bool = False
    histogram_bins: int = 64

    @tolerant
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
        values = None if values is None else np.asarray(values).ravel()
        if values is not None:
            values = values[np.isfinite(values)] if values.size else values
            if not values.size:
                values = None
        scalars = {f'{name}/{key}': float(stats[key]) for key in STAT_KEYS if key in stats}
        self._write_activation_stats(name, values, scalars, step)

    def _write_activation_stats(self, name: str, values: Optional[np.ndarray],
                                scalars: Dict[str, float], step: int) -> None:
        """Writes the histogram of ``values`` (None: no values) and ``scalars``."""
        raise NotImplementedError

    # MMEngine's own methods under the failure policy (a subclass that overrides one applies
    # ``@tolerant`` itself).
    @tolerant
    @force_init_env
    def add_config(self, config, **kwargs) -> None:
        super().add_config(config, **kwargs)

    @tolerant
    @force_init_env
    def add_graph(self, model, data_batch, **kwargs) -> None:
        super().add_graph(model, data_batch, **kwargs)

    @tolerant
    @force_init_env
    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs) -> None:
        super().add_image(name, image, step=step, **kwargs)

    @tolerant
    @force_init_env
    def add_scalar(self, name: str, value, step: int = 0, **kwargs) -> None:
        super().add_scalar(name, value, step=step, **kwargs)

    @tolerant
    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0,
                    file_path: Optional[str] = None, **kwargs) -> None:
        super().add_scalars(scalar_dict, step=step, file_path=file_path, **kwargs)

    def close(self) -> None:
        """Closes the tracker; if MMEngine's ``close`` fails, warns (with ``ignore_errors``)
        and still tries to end the run (``_end_run``)."""
        try:
            super().close()
        except Exception as err:  # noqa: BLE001
            if not self.ignore_errors:
                raise
            warnings.warn(f'{type(self).__name__}.close failed ({type(err).__name__}: '
                          f'{err}); training goes on', TrackerWarning)
            if getattr(self, '_env_initialized', False):
                tolerant(type(self)._end_run)(self)

    def _end_run(self) -> None:
        """Ends the tracker's run after a failed ``close`` (override per tracker)."""

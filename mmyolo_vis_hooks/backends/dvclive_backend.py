"""DVCLive member of the activation-statistics backends."""
from typing import Dict, Optional

import numpy as np
from mmengine.registry import VISBACKENDS
from mmengine.visualization import DVCLiveVisBackend
from mmengine.visualization.vis_backend import force_init_env

from .activation_stats_mixin import (ActivationStatsMixin, histogram_table, quantile_metrics,
                                     tolerant)


@VISBACKENDS.register_module()
class DVCLiveActivationStatsVisBackend(ActivationStatsMixin, DVCLiveVisBackend):
    """MMEngine's ``DVCLiveVisBackend`` with ``add_activation_stats`` and per-step images.

    Files under ``save_dir`` (DVCLive's ``dir``): ``metrics.json``, ``plots/metrics/<tag>.tsv``
    (one row per step), ``plots/images/<tag>/<step>.png`` and ``plots/custom/``.

    - Images: ``<tag>/<step>.png``, DVCLive's own per-step pattern (an image slider in DVC
      Studio and the VS Code extension); ``DVCLiveVisBackend`` overwrites ``<tag>.png``.
    - Histograms: DVCLive has none. Fallback: the quantiles ``<name>/min``, ``/p05``,
      ``/p25``, ``/p50``, ``/p75``, ``/p95``, ``/max`` as metrics per step (``dvc plots``
      draws their curves over epochs), and the histogram of each step as a custom plot
      ``plots/custom/<name>/<step>.json`` (``bin`` centre against ``count``,
      ``histogram_bins`` bins).
    - ``cache_images`` defaults to False here (``DVCLiveVisBackend`` sets True): caching needs
      a DVC repository and, without one, ``Live.end`` crashes in ``close``. Pass
      ``init_kwargs=dict(cache_images=True)`` inside a DVC repository.
    - With ``ignore_errors`` a failing write or ``close`` warns (``TrackerWarning``); after a
      failed close the summary (``metrics.json``) is still written.

    Example:
        >>> vis_backends = [dict(type='DVCLiveActivationStatsVisBackend',
        ...                      init_kwargs=dict(save_dvc_exp=False))]

    Args:
        save_dir (str): The DVCLive directory.
        artifact_suffix (tuple[str] | str): Suffixes of the files logged as artifacts at
            close (needs a DVC repository). Defaults to ('.json', '.py', 'yaml').
        init_kwargs (dict, optional): ``dvclive.Live`` arguments. Defaults to None.
        ignore_errors (bool): Warn instead of raising when DVCLive fails. Defaults to True.
    """

    def __init__(self,
                 save_dir: str,
                 artifact_suffix=('.json', '.py', 'yaml'),
                 init_kwargs: Optional[dict] = None,
                 ignore_errors: bool = True) -> None:
        init_kwargs = dict(init_kwargs or {})
        init_kwargs.setdefault('cache_images', False)
        super().__init__(save_dir, artifact_suffix=artifact_suffix, init_kwargs=init_kwargs)
        self.ignore_errors = ignore_errors

    @tolerant
    @force_init_env
    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs) -> None:
        """Records an RGB image as ``<name>/<step>.png``.

        Args:
            name (str): The image identifier.
            image (np.ndarray): RGB image (HWC, uint8).
            step (int): Global step value to record. Defaults to 0.
        """
        self._dvclive.step = step
        self._dvclive.log_image(f'{name}/{int(step)}.png', np.ascontiguousarray(image))

    def _write_activation_stats(self, name: str, values: Optional[np.ndarray],
                                scalars: Dict[str, float], step: int) -> None:
        metrics = dict(scalars)
        if values is not None:
            metrics.update(quantile_metrics(name, values))
            edges, counts = histogram_table(values, self.histogram_bins)
            centres = (edges[:-1] + edges[1:]) / 2
            points = [dict(bin=float(x), count=int(c)) for x, c in zip(centres, counts)]
            self._dvclive.log_plot(f'{name}/{int(step)}', points, x='bin', y='count',
                                   template='linear', title=f'{name} (step {int(step)})')
        # MMEngine's add_scalars (sets Live.step and logs each metric), outside the wrapper.
        super(ActivationStatsMixin, self).add_scalars(metrics, step=step)

    def _end_run(self) -> None:
        self._dvclive.make_summary()

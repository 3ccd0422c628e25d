"""MLflow member of the activation-statistics backends."""
import contextlib
import logging
import os
import os.path as osp
import re
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from mmengine.logging import MMLogger
from mmengine.registry import VISBACKENDS
from mmengine.visualization import MLflowVisBackend
from mmengine.visualization.vis_backend import force_init_env

from .activation_stats_mixin import (ActivationStatsMixin, histogram_table, quantile_metrics,
                                     tolerant)

_SERVER_NOTE = 'Please make sure that the mlflow server is running.'


def mlflow_name(name: str) -> str:
    """A tag as an MLflow metric/image key: ``neck[0]`` -> ``neck_0`` (MLflow accepts only
    alphanumerics, ``_ - . : /`` and spaces); other characters become ``_``."""
    name = re.sub(r'\[([^\]]*)\]', r'_\1', name)
    return re.sub(r'[^\w.\- :/]', '_', name)


class _DropMessage(logging.Filter):

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.text


@contextlib.contextmanager
def _without_message(logger: logging.Logger, text: str):
    drop = _DropMessage(text)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@VISBACKENDS.register_module()
class MLflowActivationStatsVisBackend(ActivationStatsMixin, MLflowVisBackend):
    """MMEngine's ``MLflowVisBackend`` with ``add_activation_stats``, per-step images and a
    local SQLite store.

    - Store: without ``tracking_uri`` the run goes to ``sqlite:///<save_dir>/mlflow.db`` with
      artifacts in ``<save_dir>/mlartifacts`` (MLflow 3 refuses the plain file store that
      ``MLflowVisBackend`` uses by default, mmengine#1687). Open it with
      ``mlflow ui --backend-store-uri sqlite:///<save_dir>/mlflow.db``.
    - Images: ``mlflow.log_image(key=..., step=...)``, one image per tag and step (the UI's
      step slider); ``MLflowVisBackend`` overwrites one artifact file per tag.
    - Names: MLflow refuses ``[`` and ``]`` in keys, so ``neck[0]`` is logged as ``neck_0``
      (``mlflow_name``).
    - Histograms: MLflow has none. Fallback: the quantiles ``<name>/min``, ``/p05``, ``/p25``,
      ``/p50``, ``/p75``, ``/p95``, ``/max`` as metrics per step (their curves show how the
      distribution moves over epochs), and the full histogram (``histogram_bins`` equal bins)
      as an artifact table ``histograms/<name>/step_<step>.csv`` (columns ``left,right,count``).
    - ``close`` (MMEngine's ``after_run``): without ``add_config`` (``self.cfg``) the run is
      ended without uploading config/log artifacts instead of crashing (mmengine#1144,
      #1574); any other failure warns (``TrackerWarning``) and the run is still ended.

    Example:
        >>> vis_backends = [dict(type='MLflowActivationStatsVisBackend', exp_name='mmyolo')]

    Args:
        save_dir (str): The root directory of the local store.
        exp_name (str, optional): Experiment name. Defaults to None ('mmyolo' in the local
            store, MMEngine's 'Default' with a ``tracking_uri``).
        run_name (str, optional): Run name. Defaults to None.
        tags (dict, optional): Tags of the run. Defaults to None.
        params (dict, optional): Params of the run. Defaults to None.
        tracking_uri (str, optional): Tracking server or store; None is the local SQLite
            store in ``save_dir``. Defaults to None.
        artifact_suffix (tuple[str] | str): Suffixes of the work-dir files uploaded at close.
            Defaults to ('.json', '.log', '.py', 'yaml').
        tracked_config_keys (dict, optional): As in ``MLflowVisBackend``. Defaults to None.
        artifact_location (str, optional): Artifact location of a new experiment; None is
            ``<save_dir>/mlartifacts`` in the local store. Defaults to None.
        ignore_errors (bool): Warn instead of raising when MLflow fails. Defaults to True.
    """

    def __init__(self,
                 save_dir: str,
                 exp_name: Optional[str] = None,
                 run_name: Optional[str] = None,
                 tags: Optional[dict] = None,
                 params: Optional[dict] = None,
                 tracking_uri: Optional[str] = None,
                 artifact_suffix=('.json', '.log', '.py', 'yaml'),
                 tracked_config_keys: Optional[dict] = None,
                 artifact_location: Optional[str] = None,
                 ignore_errors: bool = True) -> None:
        super().__init__(save_dir, exp_name=exp_name, run_name=run_name, tags=tags,
                         params=params, tracking_uri=tracking_uri,
                         artifact_suffix=artifact_suffix,
                         tracked_config_keys=tracked_config_keys,
                         artifact_location=artifact_location)
        self.ignore_errors = ignore_errors

    def _init_env(self) -> None:
        if self._tracking_uri is None:
            root = osp.abspath(self._save_dir)
            os.makedirs(root, exist_ok=True)
            self._tracking_uri = f'sqlite:///{root}/mlflow.db'
            self._artifact_location = (self._artifact_location
                                       or Path(root, 'mlartifacts').as_uri())
            # The store's 'Default' experiment keeps artifacts in ./mlruns of the cwd.
            self._exp_name = self._exp_name or 'mmyolo'
            # MLflowVisBackend warns about a server for any tracking_uri; a file has none.
            with _without_message(MMLogger.get_current_instance(), _SERVER_NOTE):
                super()._init_env()
        else:
            super()._init_env()

    @tolerant
    @force_init_env
    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs) -> None:
        """Records an RGB image at ``step`` (``mlflow.log_image`` with key and step).

        Args:
            name (str): The image identifier.
            image (np.ndarray): RGB image (HWC, uint8).
            step (int): Global step value to record. Defaults to 0.
        """
        self._mlflow.log_image(image, key=mlflow_name(name), step=int(step))

    @tolerant
    @force_init_env
    def add_scalar(self, name: str, value, step: int = 0, **kwargs) -> None:
        """Records a scalar at ``step`` (the name through ``mlflow_name``).

        Args:
            name (str): The scalar identifier.
            value (int, float, torch.Tensor, np.ndarray): Value to save.
            step (int): Global step value to record. Defaults to 0.
        """
        super(ActivationStatsMixin, self).add_scalar(mlflow_name(name), value, step=step)

    @tolerant
    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0,
                    file_path: Optional[str] = None, **kwargs) -> None:
        """Records several scalars at ``step`` (names through ``mlflow_name``).

        Args:
            scalar_dict (dict): Tags and values.
            step (int): Global step value to record. Defaults to 0.
            file_path (str, optional): Unused (interface unification). Defaults to None.
        """
        super(ActivationStatsMixin, self).add_scalars(
            {mlflow_name(k): v for k, v in scalar_dict.items()}, step=step)

    def _write_activation_stats(self, name: str, values: Optional[np.ndarray],
                                scalars: Dict[str, float], step: int) -> None:
        metrics = dict(scalars)
        if values is not None:
            metrics.update(quantile_metrics(name, values))
            edges, counts = histogram_table(values, self.histogram_bins)
            edges = [repr(float(e)) for e in edges]
            lines = ['left,right,count'] + [f'{edges[i]},{edges[i + 1]},{int(c)}'
                                            for i, c in enumerate(counts)]
            self._mlflow.log_text('\n'.join(lines) + '\n',
                                  f'histograms/{mlflow_name(name)}/step_{int(step):06d}.csv')
        self._mlflow.log_metrics({mlflow_name(k): v for k, v in metrics.items()},
                                 step=int(step))

    def close(self) -> None:
        if hasattr(self, '_mlflow') and not hasattr(self, 'cfg'):
            # MLflowVisBackend.close reads self.cfg.work_dir, set only by add_config
            # (mmengine#1144, #1574): end the run without the work-dir artifacts.
            tolerant(type(self)._end_run)(self)
            return
        super().close()

    def _end_run(self) -> None:
        self._mlflow.end_run()

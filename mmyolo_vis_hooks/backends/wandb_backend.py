"""WandB member of the activation-statistics backends."""
from typing import Dict, Optional, Union

import numpy as np
from mmengine.registry import VISBACKENDS
from mmengine.visualization import WandbVisBackend
from mmengine.visualization.vis_backend import force_init_env

from .activation_stats_mixin import ActivationStatsMixin, tolerant


@VISBACKENDS.register_module()
class WandbActivationStatsVisBackend(ActivationStatsMixin, WandbVisBackend):
    """MMEngine's ``WandbVisBackend`` with ``add_activation_stats`` and MMEngine's steps.

    - Histograms are WandB's own (``wandb.Histogram``, ``histogram_bins`` bins) under
      ``<name>``, logged in one row with ``<name>/mean``, ``<name>/std``, ``<name>/dead_ratio``.
    - Steps: MMEngine's ``WandbVisBackend`` drops the ``step`` it is given (mmengine#1692), so
      every point lands on WandB's own call counter. This backend writes the step MMEngine
      passes (the epoch for the hooks and validation metrics, the iteration for training
      losses, as in TensorBoard) into every row as ``step_metric`` and makes it the x-axis of
      all metrics (``wandb.define_metric('*', step_metric=step_metric)``).
    - With ``ignore_errors`` a failing ``wandb.init``, write or ``finish`` warns
      (``TrackerWarning``) and training goes on.

    Example:
        >>> vis_backends = [dict(type='WandbActivationStatsVisBackend',
        ...                      init_kwargs=dict(project='mmyolo', mode='offline'))]

    Args:
        save_dir (str): The root directory of the wandb run files.
        init_kwargs (dict, optional): ``wandb.init`` arguments, e.g.
            ``dict(mode='offline')``. Defaults to None.
        define_metric_cfg (dict | list, optional): As in ``WandbVisBackend``; applied before
            the step axis (a metric defined here keeps its own step metric). Defaults to None.
        commit (bool, optional): As in ``WandbVisBackend``. Defaults to True.
        log_code_name (str, optional): As in ``WandbVisBackend``. Defaults to None.
        watch_kwargs (dict, optional): As in ``WandbVisBackend``. Defaults to None.
        step_metric (str, optional): Name of the logged x-axis holding MMEngine's step; None
            keeps ``WandbVisBackend``'s behaviour (WandB's own counter). Defaults to 'step'.
        ignore_errors (bool): Warn instead of raising when WandB fails. Defaults to True.
    """

    def __init__(self,
                 save_dir: str,
                 init_kwargs: Optional[dict] = None,
                 define_metric_cfg: Union[dict, list, None] = None,
                 commit: Optional[bool] = True,
                 log_code_name: Optional[str] = None,
                 watch_kwargs: Optional[dict] = None,
                 step_metric: Optional[str] = 'step',
                 ignore_errors: bool = True) -> None:
        super().__init__(save_dir, init_kwargs=init_kwargs,
                         define_metric_cfg=define_metric_cfg, commit=commit,
                         log_code_name=log_code_name, watch_kwargs=watch_kwargs)
        self._step_metric = step_metric
        self.ignore_errors = ignore_errors

    def _init_env(self) -> None:
        super()._init_env()
        if self._step_metric:
            self._wandb.define_metric(self._step_metric)
            self._wandb.define_metric('*', step_metric=self._step_metric)

    def _log(self, row: dict, step: int) -> None:
        if self._step_metric:
            row[self._step_metric] = step
        self._wandb.log(row, commit=self._commit)

    @tolerant
    @force_init_env
    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs) -> None:
        """Records an RGB image at ``step``.

        Args:
            name (str): The image identifier.
            image (np.ndarray): RGB image (HWC).
            step (int): Global step value to record. Defaults to 0.
        """
        self._log({name: self._wandb.Image(image)}, step)

    @tolerant
    @force_init_env
    def add_scalar(self, name: str, value, step: int = 0, **kwargs) -> None:
        """Records a scalar at ``step``.

        Args:
            name (str): The scalar identifier.
            value (int, float, torch.Tensor, np.ndarray): Value to save.
            step (int): Global step value to record. Defaults to 0.
        """
        self._log({name: value}, step)

    @tolerant
    @force_init_env
    def add_scalars(self, scalar_dict: dict, step: int = 0,
                    file_path: Optional[str] = None, **kwargs) -> None:
        """Records several scalars in one row at ``step``.

        Args:
            scalar_dict (dict): Tags and values.
            step (int): Global step value to record. Defaults to 0.
            file_path (str, optional): Unused (interface unification). Defaults to None.
        """
        self._log(dict(scalar_dict), step)

    def _write_activation_stats(self, name: str, values: Optional[np.ndarray],
                                scalars: Dict[str, float], step: int) -> None:
        row = dict(scalars)
        if values is not None:
            row[name] = self._wandb.Histogram(values, num_bins=self.histogram_bins)
        self._log(row, step)

    def _end_run(self) -> None:
        self._wandb.finish()

"""What the visualization hooks share: argument checks, the fixed image set, when to run,
the model-state guard, failure policy and logging to every backend."""
import os
import os.path as osp
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop
from torch import nn

from .. import mmengine_compat
from ..backends.tensorboard_crc import install_fast_event_crc
from ..engine.core.checks import check_bool, check_int, check_number, owned_by
from ..engine.core.draw import check_alpha
from ..engine.core.model_state import checkpointing_off
from ..engine.core.pipeline import check_align, resize_only_pipeline
from ..engine.core.selection import (SampleRef, check_selection, load_through_pipeline,
                                     sample_refs, select_indices)
from ..runtime.config_check import UnsupportedConfigError, model_kind_refusal


class VisualizationWarning(UserWarning):
    """A visualization step failed or was skipped; training went on."""


class BaseVisHook(Hook):
    """Base of the hooks that visualize a fixed set of validation images every N epochs.

    They act in ``after_val_epoch`` at priority ``ABOVE_NORMAL`` (40): before MMYOLO's EMAHook
    (49) swaps the raw weights back, so they see the weights validation used. The step of every
    logged item is the epoch (``runner.epoch`` is already incremented during validation).

    Args:
        interval (int): Visualize on validation epochs whose number is a multiple of this.
            Defaults to 1.
        num_images (int): How many validation images to draw, chosen with ``seed``.
            Defaults to 4.
        img_indices (Sequence[int], optional): Exact validation dataset indices; overrides
            ``num_images``. Defaults to None.
        seed (int): Seed of the image choice (fixed across epochs and runs). Defaults to 0.
        align (str): ``'letterbox'`` maps each map back through the sample's letterbox
            metadata; ``'resize'`` runs a copy of the validation pipeline whose letterbox steps
            are replaced by a plain resize. MMDetection's test pipelines do not letterbox
            (keep-ratio ``Resize``; the data preprocessor pads at the bottom/right): in both
            modes maps go back exactly through ``scale_factor`` and ``batch_input_shape``.
            Defaults to 'letterbox'.
        alpha (float): Opacity of the heat overlay, in [0, 1]. Defaults to 0.5.
        score_thr (float, optional): Draw predicted boxes above this score; None draws no
            boxes. Defaults to 0.3.
        max_size (int, optional): Cap on the long side of logged images. Defaults to 640.
        strict (bool): Raise visualization failures instead of warning. Defaults to False.
    """

    priority = 'ABOVE_NORMAL'
    tag_prefix = 'vis'

    def __init__(self,
                 interval: int = 1,
                 num_images: int = 4,
                 img_indices: Optional[Sequence[int]] = None,
                 seed: int = 0,
                 align: str = 'letterbox',
                 alpha: float = 0.5,
                 score_thr: Optional[float] = 0.3,
                 max_size: Optional[int] = 640,
                 strict: bool = False) -> None:
        with owned_by(type(self).__name__):
            check_int('interval', interval, low=1)
            check_selection(num_images, img_indices)
            check_int('seed', seed)
            check_align(align)
            check_alpha(alpha)
            if score_thr is not None:
                check_number('score_thr', score_thr, 0, 1,
                             accepted='None or a number in [0, 1]')
            if max_size is not None:
                check_int('max_size', max_size, low=32, accepted='None or an int >= 32')
            check_bool('strict', strict)
        self.interval = interval
        self.num_images = num_images
        self.img_indices = list(img_indices) if img_indices is not None else None
        self.seed = seed
        self.align = align
        self.alpha = float(alpha)
        self.score_thr = score_thr
        self.max_size = max_size
        self.strict = strict
        self.samples: List[SampleRef] = []
        self._dataset = None
        self._pipeline = None
        self._class_names: Sequence[str] = ()

    # ----------------------------------------------------------------- set-up (all ranks)
    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        return model.module if is_model_wrapper(model) else model

    def check_model(self, model: nn.Module) -> None:
        """Override: validate the model (layers, family) early; raise ValueError."""

    def check_config(self, cfg, model: nn.Module) -> None:
        """Refuses, before training, a model that is no single image detector, with the
        sentence the tools give for its config (``runtime.config_check``): a distiller, a
        video/tracking or re-identification model, a classifier, a text-grounded detector.
        What the Runner could not build never gets here: its own error comes first.

        Raises:
            UnsupportedConfigError: A ValueError naming the hook, what the model is and what
                is supported.
        """
        refusal = model_kind_refusal(cfg, model)
        if refusal is not None:
            raise UnsupportedConfigError(f'{type(self).__name__}: {refusal}', refusal.reason)

    def before_run(self, runner) -> None:
        """Checks the config and the model and chooses the images before the first
        iteration."""
        model = self.unwrap(runner.model)
        self.check_config(runner.cfg, model)
        with checkpointing_off(model):  # the checks' forwards may take gradients
            self.check_model(model)
        # TensorBoard's pure-Python record checksum would make every logged picture stall
        # the training loop (see backends/tensorboard_crc.py); same bytes, C speed.
        install_fast_event_crc()
        loop = mmengine_compat.built_val_loop(runner)
        if loop is None:
            if mmengine_compat.built_train_loop(runner) is not None:
                raise ValueError(f'{type(self).__name__} visualizes validation images but the '
                                 f'config has no val_dataloader / val_cfg; add val_dataloader, '
                                 f'val_cfg and val_evaluator, or remove the hook')
            return
        if not isinstance(loop, BaseLoop):  # a test-only run: validation is not built
            return
        self._dataset = loop.dataloader.dataset
        indices = select_indices(len(self._dataset), self.num_images, self.img_indices,
                                 self.seed)
        self.samples = sample_refs(self._dataset, indices)
        self._class_names = tuple(self._dataset.metainfo.get('classes', ()))
        self._pipeline = self._build_pipeline(runner)
        val_interval = (runner.cfg.get('train_cfg') or {}).get('val_interval')
        if isinstance(val_interval, int) and val_interval > 0 and (
                self.interval % val_interval and val_interval % self.interval):
            warnings.warn(f'{type(self).__name__}: interval={self.interval} and val_interval='
                          f'{val_interval} rarely coincide; images are drawn only on validation '
                          f'epochs that are multiples of interval', VisualizationWarning)

    def _build_pipeline(self, runner):
        from mmcv.transforms import Compose
        if self.align == 'letterbox':
            return self._dataset.pipeline
        pipeline_cfg = runner.cfg.get('val_dataloader', {}).get('dataset', {}).get('pipeline')
        if not pipeline_cfg:
            raise ValueError(f"{type(self).__name__}: align='resize' needs "
                             f'val_dataloader.dataset.pipeline in the config')
        return Compose(resize_only_pipeline(pipeline_cfg))

    # ----------------------------------------------------------------- when to act
    def is_due(self, runner) -> bool:
        """True on validation epochs to visualize, on the main process only."""
        return bool(self.samples) and is_main_process() and runner.epoch % self.interval == 0

    def load_batch(self, sample: SampleRef) -> dict:
        """One image through this hook's pipeline (letterbox or resize-only), collated."""
        return load_through_pipeline(self._dataset, sample.index, self._pipeline)

    # ----------------------------------------------------------------- failure policy
    def fail(self, message: str, error: Optional[BaseException] = None) -> None:
        """Warns (training goes on) or, with ``strict=True``, raises."""
        text = f'{type(self).__name__}: {message}'
        if error is not None:
            text += f' ({type(error).__name__}: {error})'
        if self.strict:
            if error is not None:
                raise RuntimeError(text) from error
            raise RuntimeError(text)
        warnings.warn(text, VisualizationWarning)

    # ----------------------------------------------------------------- logging
    def log_image(self, runner, tag: str, image: np.ndarray, step: int) -> None:
        """Sends an RGB image to every backend; one failing backend does not stop the others."""
        for name, backend in self._backends(runner).items():
            try:
                img_dir = mmengine_compat.local_image_dir(backend)
                if img_dir and '/' in tag:  # LocalVisBackend writes <tag>_<step>.png
                    os.makedirs(osp.join(img_dir, osp.dirname(tag)), exist_ok=True)
                backend.add_image(tag, image, step=step)
            except Exception as err:  # noqa: BLE001 - any backend error must not stop training
                self.fail(f'backend {name} failed to write image {tag!r}', err)

    def log_scalars(self, runner, scalars: Dict[str, float], step: int) -> None:
        for name, backend in self._backends(runner).items():
            try:
                backend.add_scalars(scalars, step=step)
            except Exception as err:  # noqa: BLE001
                self.fail(f'backend {name} failed to write scalars {list(scalars)}', err)

    @staticmethod
    def _backends(runner) -> dict:
        # Per-backend calls (instead of Visualizer.add_image) isolate a failing backend.
        return mmengine_compat.vis_backends(runner.visualizer)

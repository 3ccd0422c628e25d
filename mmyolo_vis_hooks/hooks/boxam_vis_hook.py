"""BoxAMVisHook: one class activation map per detected box on fixed validation images."""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmyolo.registry import HOOKS

from ..engine.cam import METHODS, BoxCAM, target_layer_error
from ..engine.cam.methods import AblationCAM, build_method
from ..engine.cam.visualize import draw_box_cams, energy_in_boxes
from ..engine.featmap import display_image
from ..engine.model_state import preserved_model_state
from ..engine.selection import read_rgb
from .base_vis_hook import BaseVisHook


@HOOKS.register_module()
class BoxAMVisHook(BaseVisHook):
    """Logs box-level CAMs (one map per detected box) for a fixed set of validation images.

    Every ``interval`` validation epochs, on the main process only, each chosen image is run
    once more through the validation pipeline (letterbox) or its resize-only variant, with
    gradients enabled (validation itself runs under ``no_grad``), and each of its ``topk``
    boxes above ``score_thr`` is explained by its own class score. The model's weights,
    buffers, ``.grad``, train/eval modes, ``requires_grad`` and the RNG states are restored
    afterwards; gradients are taken with ``torch.autograd.grad`` on the captured activations,
    never into parameters.

    Logged with step = epoch:

    - ``boxam/<image>/<method>``: a grid with one overlay per box (its own box drawn), or one
      merged overlay with every box (``merge=True``);
    - ``boxam/energy_in_gt/<method>``: the energy-based pointing game, i.e. the share of the
      merged CAM (maximum over the explained boxes) that falls inside the image's ground-truth
      boxes, averaged over the chosen images that have explained boxes (not logged in an
      epoch where no image has a box above ``score_thr``).

    Example:
        >>> custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
        >>> custom_hooks = [dict(type='BoxAMVisHook', interval=5, num_images=4,
        ...                      method='gradcam', topk=3)]

    Args:
        method (str | Sequence[str]): One or several of ``gradcam``, ``gradcam++``,
            ``xgradcam``, ``layercam``, ``eigengradcam``, ``eigencam``, ``ablationcam``.
            Defaults to 'gradcam'.
        target_layers (Sequence[str], optional): Layer paths; every ``neck.out_layers[i]``
            when None (each box is then explained on its own pyramid level). Each must give a
            4-D (N, C, H, W) output (or a tuple/list of them) that the head's box scores are
            computed from: backbone and neck layers, or the head's classification/objectness
            branch. A layer the scores do not depend on (a side branch whose output is
            discarded, the head's box-regression branch, a loss module) is refused before
            training, for every method: its gradients are undefined and its EigenCAM or
            AblationCAM maps would say nothing about the boxes. Defaults to None.
        topk (int): Boxes explained per image, best first; ``<= 0`` for all above
            ``score_thr``. Defaults to 3.
        norm_in_bbox (bool): Normalise each map inside its box and zero it outside.
            Defaults to False.
        merge (bool): Log one merged map per image instead of a per-box grid.
            Defaults to False.
        batch_size (int): AblationCAM: ablated copies per forward. Defaults to 32.
        ratio_channels_to_ablate (float): AblationCAM: share of channels ablated, in (0, 1].
            Defaults to 1.0.
        log_energy (bool): Log the pointing-game scalar. Defaults to True.
        **kwargs: ``interval``, ``num_images``, ``img_indices``, ``seed``, ``align``
            (``'letterbox'`` or ``'resize'``), ``alpha``, ``score_thr`` (the boxes explained;
            a number is required), ``max_size``, ``strict``; see ``BaseVisHook``.
    """

    tag_prefix = 'boxam'

    def __init__(self,
                 method: Union[str, Sequence[str]] = 'gradcam',
                 target_layers: Optional[Sequence[str]] = None,
                 topk: int = 3,
                 norm_in_bbox: bool = False,
                 merge: bool = False,
                 batch_size: int = 32,
                 ratio_channels_to_ablate: float = 1.0,
                 log_energy: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        methods = [method] if isinstance(method, str) else list(method or [])
        if not methods or not all(isinstance(m, str) and m.lower() in METHODS for m in methods):
            raise ValueError(f'BoxAMVisHook: method must be one or a list of '
                             f'{", ".join(METHODS)}; got {method!r}')
        if isinstance(target_layers, str):
            target_layers = [target_layers]
        if target_layers is not None and (
                not isinstance(target_layers, Sequence) or not target_layers
                or not all(isinstance(t, str) and t for t in target_layers)):
            raise ValueError(f'BoxAMVisHook: target_layers must be None or a non-empty list of '
                             f'layer paths such as "neck.out_layers[2]", got {target_layers!r}')
        if isinstance(topk, bool) or not isinstance(topk, int):
            raise ValueError(f'BoxAMVisHook: topk must be an int (<= 0: all boxes), got {topk!r}')
        if self.score_thr is None:
            raise ValueError('BoxAMVisHook: score_thr must be a number in [0, 1]: it chooses '
                             'the boxes to explain')
        for name, value in (('norm_in_bbox', norm_in_bbox), ('merge', merge),
                            ('log_energy', log_energy)):
            if not isinstance(value, bool):
                raise ValueError(f'BoxAMVisHook: {name} must be a bool, got {value!r}')
        try:  # the same checks the engine makes, before any model exists
            AblationCAM(batch_size, ratio_channels_to_ablate)
        except ValueError as err:
            raise ValueError(f'BoxAMVisHook: {err}') from None
        self.methods = [build_method(m).name for m in methods]
        self.target_layers = None if target_layers is None else list(target_layers)
        self.topk = topk
        self.norm_in_bbox = norm_in_bbox
        self.merge = merge
        self.batch_size = batch_size
        self.ratio_channels_to_ablate = float(ratio_channels_to_ablate)
        self.log_energy = log_energy
        self._cams: Dict[str, BoxCAM] = {}

    def check_model(self, model) -> None:
        """Builds the engines: an unsupported detector, an unknown layer or a layer the box
        scores do not depend on fails here, before training starts."""
        self._cams = {
            method: BoxCAM(model, method, self.target_layers, score_thr=self.score_thr,
                           topk=self.topk, batch_size=self.batch_size,
                           ratio_channels_to_ablate=self.ratio_channels_to_ablate)
            for method in self.methods
        }
        self._check_score_dependence(model, next(iter(self._cams.values())))

    def _check_score_dependence(self, model, cam: BoxCAM) -> None:
        """One 64x64 eval forward with the target layers as graph nodes (the model is restored
        afterwards): the same layers serve every method, so one probe covers them all."""
        try:
            problems = cam.probe_target_layers((64, 64))
        except Exception as err:  # noqa: BLE001 - an unusual model: gradient methods still
            # refuse such layers at drawing
            self.fail('could not check with a 64x64 dummy forward that the box scores depend '
                      'on the target layers', err)
            return
        if problems:
            raise ValueError(f'BoxAMVisHook: {target_layer_error(model, problems)}')

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self.is_due(runner):
            return
        step = runner.epoch
        model = self.unwrap(runner.model)
        energies: Dict[str, List[float]] = {method: [] for method in self.methods}
        # The guard also covers loading (pipelines may draw random numbers).
        with preserved_model_state(model):
            for sample in self.samples:
                try:
                    data = self.load_batch(sample)
                    image = display_image(read_rgb(sample.img_path), self.max_size)
                except Exception as err:  # noqa: BLE001 - a visualization never stops training
                    self.fail(f'skipped image {sample.name}', err)
                    continue
                for method, cam in self._cams.items():
                    try:
                        (result, ), (meta, ) = cam.explain_data(data)
                        if not all(torch.isfinite(m).all() for m in result.layer_maps):
                            self.fail(f'{method}: NaN/Inf in the maps of {sample.name}; drawn '
                                      f'with them zeroed')
                        if len(result) == 0:
                            self.fail(f'{method}: no box above score_thr={self.score_thr} on '
                                      f'{sample.name}; the plain image is logged')
                        drawn = draw_box_cams(image, result, meta, self._class_names,
                                              self.norm_in_bbox, self.merge, self.alpha)
                        if self.log_energy:
                            energy = energy_in_boxes(result, meta, self._gt_boxes(sample),
                                                     size=image.shape[:2])
                            if energy is not None:
                                energies[method].append(energy)
                    except Exception as err:  # noqa: BLE001
                        self.fail(f'{method} failed on {sample.name}', err)
                        continue
                    self.log_image(runner, f'{self.tag_prefix}/{sample.name}/{method}', drawn,
                                   step)
        scalars = {f'{self.tag_prefix}/energy_in_gt/{method}': float(np.mean(values))
                   for method, values in energies.items() if values}
        if scalars:
            self.log_scalars(runner, scalars, step)

    def _gt_boxes(self, sample) -> np.ndarray:
        """The image's ground-truth xyxy boxes in original pixels (ignored ones left out)."""
        instances = self._dataset.get_data_info(sample.index).get('instances', [])
        boxes = [inst['bbox'] for inst in instances if not inst.get('ignore_flag', 0)]
        return np.asarray(boxes, np.float32).reshape(-1, 4)

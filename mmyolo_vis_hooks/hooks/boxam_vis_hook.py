"""BoxAMVisHook: one class activation map per detected box on fixed validation images."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.registry import HOOKS

from ..engine.detectors import explainable_detector
from ..engine.cam import DEFAULT_TARGET, METHODS, BoxCAM, target_layer_error
from ..engine.cam.draw import draw_box_cams, energy_in_boxes
from ..engine.cam.faithfulness import Faithfulness
from ..engine.cam.methods import build_method
from ..engine.core.checks import check_bool, check_int, check_str_list, owned_by
from ..engine.core.draw import display_image
from ..engine.core.geometry import quads_to_rotated, segmentation_masks
from ..engine.core.model_state import autocast_off, checkpointing_off, preserved_model_state
from ..runtime.images import read_rgb
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

    Mixed precision: with ``AmpOptimWrapper`` (``--amp``) or ``ValLoop(fp16=True)`` the maps
    are still computed in float32: autocast is switched off while the hook runs, even if it
    is called inside an autocast region, and put back as it was afterwards (a CAM's gradients
    in float16/bfloat16 keep about 3 significant digits; mmcv's CPU NMS refuses bfloat16).
    The maps are then the fp32 ones exactly, and training stays bit for bit the same: the
    weights stay float32 under autocast, and the ``AmpOptimWrapper``'s GradScaler is never
    touched (``tests/hooks/test_amp.py``).

    Logged with step = epoch:

    - ``boxam/<image>/<method>``: a grid with one overlay per box (its own box drawn), or one
      merged overlay with every box (``merge=True``);
    - ``boxam/energy_in_gt/<method>``: the energy-based pointing game, i.e. the share of the
      merged CAM (maximum over the explained boxes) that falls inside the image's ground-truth
      boxes (inside its ground-truth instance masks where every object has one), averaged over the chosen images that have explained boxes (not logged in an
      epoch where no image has a box above ``score_thr``).
    - with ``log_faithfulness=True``: ``boxam/deletion_auc/<method>`` and
      ``boxam/insertion_auc/<method>``, the mean over the explained boxes of the chosen images
      of each box's deletion AUC (lower is better) and insertion AUC (higher is better)
      (``engine/cam/faithfulness.py``: the box's own score as its image's pixels are removed
      from / revealed onto a blurred copy in the map's order, in ``faithfulness_steps``
      steps; a box no longer detected scores 0, so the scalars are always finite).

    A box whose CAM is float32 noise (its target's gradient underflowed, or its maps vary no
    more than rounding; ``engine/cam/reliability.py``) is named in a warning (image, box index,
    label, score, reason; with ``strict=True`` an error) and drawn without heat: its tile is the
    plain image with its box, captioned ``noise``.

    Instance-segmentation detectors (Mask R-CNN, YOLOv5-ins, RTMDet-ins, ...): each instance is
    explained by its candidate's class score as its box is, and its tile shows the outline of
    its predicted mask beside its box; ``norm_in_mask`` normalises its map inside that mask.

    Example:
        >>> custom_imports = dict(imports=['mmyolo_vis_hooks'], allow_failed_imports=False)
        >>> custom_hooks = [dict(type='BoxAMVisHook', interval=5, num_images=4,
        ...                      method='gradcam', topk=3)]

    Args:
        method (str | Sequence[str]): One or several of ``gradcam``, ``gradcam++``,
            ``xgradcam``, ``layercam``, ``eigengradcam``, ``eigencam``, ``ablationcam``,
            ``drise`` (D-RISE: black box, random masks of the input; ignores
            ``target_layers``). Defaults to 'gradcam'.
        target_layers (Sequence[str], optional): Layer paths; the detector's default when
            None: every ``neck.out_layers[i]`` (MMYOLO) or the ``neck``'s outputs
            (MMDetection), so each box is explained on its own pyramid level. Each must give a
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
        norm_in_mask (bool): Normalise each map inside its predicted instance mask and zero
            it outside (instance-segmentation detectors; refused before training for others).
            Defaults to False.
        merge (bool): Log one merged map per image instead of a per-box grid.
            Defaults to False.
        batch_size (int): AblationCAM: ablated copies per forward; D-RISE: masked images per
            forward. Defaults to 32.
        ratio_channels_to_ablate (float): AblationCAM: share of channels ablated, in (0, 1].
            Defaults to 1.0.
        log_energy (bool): Log the pointing-game scalar. Defaults to True.
        target (str): What gradient methods differentiate for a box: ``'logit'`` (the class
            logit of its label at its prior, plus the objectness logit for YOLOv5, YOLOv7 and
            YOLOX; cannot underflow) or ``'log_score'`` (the log of its score; the maps are
            those of the score's gradient, which underflows for very confident boxes). Ignored
            by ``eigencam``, ``ablationcam`` and ``drise`` (see ``BoxCAM``). Defaults to
            'logit'.
        log_faithfulness (bool): Log the deletion and insertion AUC scalars. Costs
            ``2 * (faithfulness_steps - 1)`` forwards per box and method (batched) plus two
            per image. Defaults to False.
        faithfulness_steps (int): Perturbation steps per curve (>= 2). Defaults to 8.
        num_masks (int): D-RISE: random masks per image (one masked forward each).
            Defaults to 500.
        grid_size (int): D-RISE: cells per side of the mask grid. Defaults to 16.
        keep_prob (float): D-RISE: probability that a grid cell is kept. Defaults to 0.5.
        mask_seed (int, optional): D-RISE: seed of the masks' private generator (the same
            masks every epoch; the training RNG is never used). Defaults to 0.
        drise_similarity (str): D-RISE: ``'box'`` (box IoU) or ``'mask'`` (instance-mask IoU
            with the masked image's final detections; instance-segmentation detectors).
            Defaults to 'box'.
        mask_sampling (str): D-RISE: ``'balanced'`` or ``'random'`` (see ``BoxCAM``).
            Defaults to 'balanced'.
        keypoint (int, optional): Pose detectors: explain keypoint ``j`` of each person (its
            visibility at the person's candidate) instead of the person; gradient methods
            only (see ``BoxCAM``). Defaults to None.
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
                 norm_in_mask: bool = False,
                 merge: bool = False,
                 batch_size: int = 32,
                 ratio_channels_to_ablate: float = 1.0,
                 log_energy: bool = True,
                 target: str = DEFAULT_TARGET,
                 log_faithfulness: bool = False,
                 faithfulness_steps: int = 8,
                 num_masks: int = 500,
                 grid_size: int = 16,
                 keep_prob: float = 0.5,
                 mask_seed: Optional[int] = 0,
                 drise_similarity: str = 'box',
                 mask_sampling: str = 'balanced',
                 keypoint: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._drise_options = dict(num_masks=num_masks, grid_size=grid_size,
                                   keep_prob=keep_prob, mask_seed=mask_seed,
                                   drise_similarity=drise_similarity,
                                   mask_sampling=mask_sampling)
        with owned_by('BoxAMVisHook'):
            methods = check_str_list('method', method, ', '.join(METHODS))
            if target_layers is not None:
                target_layers = check_str_list('target_layers', target_layers,
                                               '"neck.out_layers[2]"')
            if self.score_thr is None:
                raise ValueError('score_thr must be a number in [0, 1]: it chooses the boxes '
                                 'to explain')
            for name, value in (('norm_in_bbox', norm_in_bbox), ('norm_in_mask', norm_in_mask),
                                ('merge', merge), ('log_energy', log_energy)):
                check_bool(name, value)
            if norm_in_bbox and norm_in_mask:
                raise ValueError('norm_in_bbox and norm_in_mask exclude each other: pick one')
            check_bool('log_faithfulness', log_faithfulness)
            check_int('faithfulness_steps', faithfulness_steps, low=2)
            for name in methods:  # the engine's own checks, before any model exists
                BoxCAM.check_options(name, self.score_thr, topk, batch_size,
                                     ratio_channels_to_ablate, target=target,
                                     owner='BoxAMVisHook', keypoint=keypoint,
                                     **self._drise_options)
        self.methods = [build_method(m).name for m in methods]
        self.target_layers = None if target_layers is None else list(target_layers)
        self.topk = topk
        self.norm_in_bbox = norm_in_bbox
        self.norm_in_mask = norm_in_mask
        self.merge = merge
        self.batch_size = batch_size
        self.ratio_channels_to_ablate = float(ratio_channels_to_ablate)
        self.log_energy = log_energy
        self.target = target
        self.keypoint = keypoint
        self.log_faithfulness = log_faithfulness
        self.faithfulness_steps = faithfulness_steps
        self._faithfulness: Optional[Faithfulness] = None
        self._cams: Dict[str, BoxCAM] = {}

    def check_model(self, model) -> None:
        """Builds the engines: an unsupported detector, an unknown layer or a layer the box
        scores do not depend on fails here, before training starts. The engines share one
        detector adapter (and so its one check of the layers)."""
        detector = explainable_detector(model)
        if self.norm_in_mask and not detector.predicts_masks:
            raise ValueError(f'BoxAMVisHook: norm_in_mask needs instance masks; '
                             f'{detector.head_name} ({detector.kind}) predicts boxes only: use '
                             f'norm_in_bbox')
        self._cams = {
            method: BoxCAM(detector, method, self.target_layers, score_thr=self.score_thr,
                           topk=self.topk, batch_size=self.batch_size,
                           ratio_channels_to_ablate=self.ratio_channels_to_ablate,
                           target=self.target, keypoint=self.keypoint,
                           **self._drise_options)
            for method in self.methods
        }
        layer_cams = [cam for cam in self._cams.values() if cam.target_layers]
        if layer_cams:  # input-level methods (drise) have no layers to probe
            self._check_score_dependence(model, layer_cams[0])
        if self.log_faithfulness:
            self._faithfulness = Faithfulness(detector, steps=self.faithfulness_steps)

    def _check_score_dependence(self, model, cam: BoxCAM) -> None:
        """One small eval forward of zeros with the target layers as graph nodes (the model is
        restored afterwards): the same layers serve every method, so one probe covers them."""
        try:
            problems = cam.probe_target_layers()
        except Exception as err:  # noqa: BLE001 - an unusual model: gradient methods still
            # refuse such layers at drawing
            self.fail('could not check with a small dummy forward that the box scores '
                      'depend on the target layers', err)
            return
        if problems:
            raise ValueError(f'BoxAMVisHook: {target_layer_error(cam.detector, problems)}')

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self.is_due(runner):
            return
        step = runner.epoch
        model = self.unwrap(runner.model)
        energies: Dict[str, List[float]] = {method: [] for method in self.methods}
        aucs: Dict[str, Dict[str, List[float]]] = {
            kind: {method: [] for method in self.methods} for kind in ('deletion', 'insertion')}
        # The guard also covers loading (pipelines may draw random numbers).
        with preserved_model_state(model), checkpointing_off(model), autocast_off(model):
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
                                      f'{sample.name}{self._head_thr_note(cam)}; the plain '
                                      f'image is logged')
                        for line in result.unreliable_messages(self._class_names):
                            self.fail(f'{method}: image {sample.name}: {line}; drawn without '
                                      f'heat')
                        drawn = draw_box_cams(image, result, meta, self._class_names,
                                              self.norm_in_bbox, self.merge, self.alpha,
                                              norm_in_mask=self.norm_in_mask,
                                              skeleton=cam.detector.skeleton)
                        if self.log_energy:
                            boxes, masks = self._ground_truth(sample)
                            energy = energy_in_boxes(result, meta, boxes, size=image.shape[:2],
                                                     gt_masks=masks)
                            if energy is not None:
                                energies[method].append(energy)
                        if self._faithfulness is not None and len(result):
                            curves = self._faithfulness.of_data(data, result)
                            aucs['deletion'][method].extend(curves.deletion_auc.tolist())
                            aucs['insertion'][method].extend(curves.insertion_auc.tolist())
                    except Exception as err:  # noqa: BLE001
                        self.fail(f'{method} failed on {sample.name}', err)
                        continue
                    self.log_image(runner, f'{self.tag_prefix}/{sample.name}/{method}', drawn,
                                   step)
        scalars = {f'{self.tag_prefix}/energy_in_gt/{method}': float(np.mean(values))
                   for method, values in energies.items() if values}
        scalars.update({f'{self.tag_prefix}/{kind}_auc/{method}': float(np.mean(values))
                        for kind, per_method in aucs.items()
                        for method, values in per_method.items()
                        if values and np.isfinite(values).all()})
        if scalars:
            self.log_scalars(runner, scalars, step)

    def _head_thr_note(self, cam: BoxCAM) -> str:
        """Where the detector's own post-processing threshold is the higher one, says so: a
        lower ``score_thr`` cannot bring back boxes the detector itself drops (e.g. RetinaNet's
        ``test_cfg.score_thr=0.05`` with random weights, whose scores start near 0.01)."""
        head_thr = cam.detector.selection_thr
        if head_thr <= self.score_thr:
            return ''
        return (f' (the detector\'s own test_cfg score_thr={head_thr:g} drops its boxes '
                f'first)')

    def _ground_truth(self, sample) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The image's ground-truth boxes in original pixels (ignored ones left out): xyxy,
        or rotated ``(G, 5)`` where the dataset gives quadrilaterals (DOTA's 8 values per
        box); and their ``(G, H, W)`` instance masks where every one has a segmentation
        (COCO's ``mask`` entries of the data info), else None."""
        info = self._dataset.get_data_info(sample.index)
        instances = [inst for inst in info.get('instances', [])
                     if not inst.get('ignore_flag', 0)]
        boxes = np.asarray([inst['bbox'] for inst in instances], np.float32)
        boxes = quads_to_rotated(boxes) if boxes.ndim == 2 and boxes.shape[1] == 8 else \
            boxes.reshape(-1, 4)
        masks = None
        if instances and info.get('height') and info.get('width'):
            masks = segmentation_masks([inst.get('mask') for inst in instances],
                                       int(info['height']), int(info['width']))
        return boxes, masks

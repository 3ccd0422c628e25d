"""The box CAM engine: one forward, the boxes, one map per box.

Gradient methods take, after ONE forward, the gradient of each chosen box's own score with
``torch.autograd.grad`` on the captured layer outputs (all boxes at once through a batched
vector-Jacobian product when autograd supports it, else one VJP per box). Only the part of the
graph between the target layers and the scores is differentiated, and nothing lands in any
parameter's ``.grad``.

Captured outputs are handed downstream as a fresh node: MMYOLO necks whose ``out_layers`` are
``nn.Identity`` return the very tensor their bottom-up path also consumes, so the gradient of a
level-2 box w.r.t. that tensor would also flow through level 0's path. With the fresh node, the
gradient is the one w.r.t. what the layer returned to its callers: for the default target layers
(all of ``neck.out_layers``) a box's map lives on its own level only.

A target layer must be one the box scores are computed from (the backbone, the neck, the head's
classification/objectness branch), for every method: on any other layer (a side branch whose
output is discarded, the head's box-regression branch) a gradient is undefined and EigenCAM or
AblationCAM maps say nothing about the boxes. :meth:`BoxCAM.check_target_layers` finds such
layers with one small forward; the gradient path also refuses them at run time.

Input-level methods (``method.works_on_input``: D-RISE) have no target layers: the engine
hands them the preprocessed image, its boxes, its predictions and a batch predictor, and puts
their ``(K, H, W)`` maps on the network input into :class:`BoxCAMResult` as one "layer" named
``input``, so alignment and drawing work unchanged.
"""
import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import Tensor, nn

from ..core.devices import in_network_layout
from ..core.dummy_forward import dummy_batch, dummy_input_size
from ..core.geometry import original_size
from ..core.layers import (ActivationCapture, OutputSource, flatten_output, join_tokens,
                           resolve_layer, split_tokens)
from ..core.model_state import autocast_off, preserved_model_state
from .compose import box_masks, compose_box_maps
from ..core.checks import check_choice, check_int, check_number, check_str_list, owned_by
from .methods import (DRISE, METHODS, AblationCAM, BoxCAMMethod, InputContext, LayerContext,
                      build_method)
from ..detectors import (ExplainableDetector, ExplainedBoxes, FlatPredictions,
                         explainable_detector)
from ..detectors.base import default_metas
from .reliability import at_noise_level, box_reasons

# What a gradient method differentiates for a box (see BoxCAM's ``target``).
TARGETS = ('logit', 'log_score')
DEFAULT_TARGET = 'logit'


def target_layer_error(detector: ExplainableDetector, problems: Dict[str, str]) -> str:
    """The message for target layers (or ``layer[i]`` outputs) that cannot carry a box CAM:
    each one with its reason, then what is accepted."""
    listed = '; '.join(f'{key!r} {why}' for key, why in problems.items())
    try:
        examples = 'backbone and neck layers such as ' + ', '.join(
            repr(p) for p in detector.default_target_layers()) + ' (the default)'
    except ValueError:
        examples = 'backbone and neck layers such as "backbone.stage4"'
    return (f'these target layers cannot be explained by box CAMs: {listed}. A box CAM shows '
            f'how a layer the box score is computed from contributes to it (for every method: '
            f'on another layer EigenCAM and AblationCAM maps say nothing about the boxes). '
            f'Accepted: layers with a 4-D (N, C, H, W) output that the scores of '
            f'{detector.head_name} depend on: {examples}, or layers of the head\'s '
            f'classification/objectness branch (not its box-regression branch). '
            f'--preview-model (tools/boxam_vis.py) lists every layer.')


def _not_depending_reason(detector: ExplainableDetector) -> str:
    return (f'does not feed the box scores (the scores of {detector.head_name} do '
            f'not depend on its output)')


def _not_depending(scores: Tensor, keys: Sequence[str], acts: Sequence[Tensor]) -> List[str]:
    """Keys of the activations the scores' autograd graph does not reach (structurally: a
    gradient that happens to be zero still counts as a dependence)."""
    if not scores.requires_grad:
        return list(keys)
    linked = [i for i, act in enumerate(acts) if act.requires_grad]
    grads = torch.autograd.grad(scores.sum(), [acts[i] for i in linked], allow_unused=True) \
        if linked else []
    reached = {i for i, grad in zip(linked, grads) if grad is not None}
    return [key for i, key in enumerate(keys) if i not in reached]


def _rebind(value):
    """A fresh graph node for every tensor of a layer output (same values, same structure).

    ``anchor`` is what gradients are taken w.r.t.; downstream layers get a copy of it, so an
    in-place op downstream cannot alter the recorded activation. A tensor outside any graph
    (the engine freezes the parameters) becomes a leaf that requires grad: only the part after
    it matters here. A target layer downstream of another one stays in that one's graph.
    """
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            return value, value
        anchor = value.view_as(value) if value.requires_grad else \
            value.detach().requires_grad_(True)
        return anchor, anchor.clone()
    if isinstance(value, (tuple, list)):
        pairs = [_rebind(v) for v in value]
        return ([a for a, _ in pairs], type(value)(d for _, d in pairs))
    return value, value


class _GradientCapture(ActivationCapture):
    """Records live layer outputs (graph nodes) and hands their callers a fresh node.

    Every call of a module that runs more than once (RTMDet's head convolutions shared across
    levels) gets its own anchor, so each call is its own layer output with its own gradient:
    call ``l`` feeds level ``l``'s scores only.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        super().__init__(model, paths, detach=False, to_cpu=False)

    def _hook(self, path: str):
        def record(module, inputs, output):
            if not self.enabled:
                return None
            maps = split_tokens(output, self.token_grids) if isinstance(output, Tensor) \
                else None
            if maps is not None:  # a token sequence: each level's map is its own node
                anchors, downstream = _rebind(maps)
                self.token_paths.add(path)
                self._record(path, output, anchors)
                return join_tokens(downstream)
            anchors, downstream = _rebind(output)
            self._record(path, output, flatten_output(anchors))
            return downstream
        return record


def _layer_outputs(capture: ActivationCapture
                   ) -> Tuple[List[str], List[OutputSource], List[Tensor]]:
    """The 4-D outputs a capture recorded (one per call and tuple element): their keys
    (``<layer>``, ``<layer>@<call>``, ``...[i]``), sources and tensors."""
    kept = [(source, tensor) for source, tensor in capture.captured() if tensor.dim() == 4]
    return [s.key for s, _ in kept], [s for s, _ in kept], [t for _, t in kept]


class _ReplaceOutput:
    """Forward hook that swaps one tensor of a module's output for a given batch, at one call
    of the module (counted from entering the context: use one context per forward); with
    ``token_grids``, level ``index`` of a token sequence (``split_tokens``)."""

    def __init__(self, module: nn.Module, index: int, call: int = 0,
                 token_grids: Optional[Sequence[Tuple[int, int]]] = None) -> None:
        self.module, self.index, self.call, self.value, self.handle = \
            module, index, call, None, None
        self.token_grids = token_grids

    def __enter__(self):
        calls = itertools.count()

        def swap(module, inputs, output):
            if next(calls) != self.call:
                return None
            if self.token_grids:
                maps = split_tokens(output, self.token_grids)
                maps[self.index] = self.value
                return join_tokens(maps)
            if isinstance(output, Tensor):
                return self.value
            items = list(output)
            items[self.index] = self.value
            return type(output)(items)
        self.handle = self.module.register_forward_hook(swap)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@dataclass
class BoxCAMResult:
    """The CAMs of one image.

    Attributes:
        detections (ExplainedBoxes): The explained boxes (network-input pixels), their scores,
            labels, prior indices and levels.
        layer_maps (list[Tensor]): Per target-layer output, ``(K, h, w)`` raw maps.
        layer_keys (list[str]): Name of each layer output (``neck.out_layers[0]``, ...).
        input_size (tuple[int, int]): ``(H, W)`` of the network input.
        method (str): The method name.
        layer_noise (Tensor): ``(K, L)`` bool: box k's raw map on layer l is at float32 noise
            level (``reliability.at_noise_level``); such layers are left out of its map.
        reasons (list[str]): Per box, why its CAM is unreliable (``reliability.box_reasons``:
            zero or subnormal gradient, or noise on every layer), ``''`` when it is reliable.
            An unreliable box's map is all zeros: never draw noise.
        target (str): What gradient methods differentiated (``'logit'`` or ``'log_score'``).
        keypoint (int, optional): The keypoint whose visibility was differentiated instead of
            the box's class score (``BoxCAM(keypoint=j)``, pose detectors); None for box
            CAMs.
    """
    detections: ExplainedBoxes
    layer_maps: List[Tensor]
    layer_keys: List[str]
    input_size: Tuple[int, int]
    method: str
    layer_noise: Tensor
    reasons: List[str]
    target: str = DEFAULT_TARGET
    keypoint: Optional[int] = None
    _maps_cache: list = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.detections)

    @property
    def reliable(self) -> Tensor:
        """``(K, )`` bool: the box's CAM is more than float32 noise."""
        return torch.tensor([not reason for reason in self.reasons], dtype=torch.bool)

    def unreliable_messages(self, class_names: Sequence[str] = ()) -> List[str]:
        """One line per unreliable box naming it (index, label, score) and the reason; the hook
        warns (strict: raises) and the tool prints these."""
        lines = []
        for k, reason in enumerate(self.reasons):
            if reason:
                label = int(self.detections.labels[k])
                name = class_names[label] if label < len(class_names) else str(label)
                lines.append(f'box #{k} (label {name}, score '
                             f'{float(self.detections.scores[k]):.4f}) has no CAM, {reason}')
        return lines

    def box_maps(self, meta: Optional[Dict] = None,
                 out_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """``(K, H, W)`` maps in [0, 1] on the original image (``meta`` given) or the input;
        layers at noise level are left out, and an unreliable box's map is zero.

        Computed once per ``(meta, out_size)``: the drawing, the energy scalar and the
        faithfulness metrics of one image share the maps (treat them as read-only)."""
        for cached_meta, cached_size, maps in self._maps_cache:
            if cached_meta is meta and cached_size == out_size:
                return maps
        maps = self._compose(meta, out_size)
        self._maps_cache.append((meta, out_size, maps))
        return maps

    def _compose(self, meta: Optional[Dict], out_size: Optional[Tuple[int, int]]) -> Tensor:
        if len(self) == 0:
            if meta is None:
                size = out_size or self.input_size
            else:
                size = out_size or original_size(meta)
            return torch.zeros((0, *size))
        keep = ~self.layer_noise & self.reliable[:, None].to(self.layer_noise.device)
        layer_maps = [raw * keep[:, li].to(raw.device, raw.dtype)[:, None, None]
                      for li, raw in enumerate(self.layer_maps)]
        return compose_box_maps(layer_maps, meta, self.input_size, out_size)


class BoxCAM:
    """Per-box class activation maps for any detector with an adapter
    (``engine.detectors``).

    Construction checks the model and the layers and builds nothing else; the model is only
    touched inside :meth:`__call__`, which runs it in eval mode and restores every module's
    mode, ``requires_grad``, ``.grad``, buffers and the RNG state afterwards. It explains in
    float32, inside an autocast region too (``ValLoop(fp16=True)``, ``AmpOptimWrapper``):
    autocast is switched off for the call and back on afterwards
    (``core.model_state.autocast_off``).

    Args:
        model (nn.Module): A detector ``engine.detectors.explainable_detector`` accepts:
            MMYOLO's YOLOv5, YOLOv6, YOLOv7, YOLOv8, YOLOX, RTMDet or PPYOLOE, or an
            MMDetection single-stage detector whose dense head decodes like
            ``BaseDenseHead`` (RetinaNet, FCOS, ATSS, ...).
        method (str | BoxCAMMethod): ``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``,
            ``eigengradcam``, ``eigencam``, ``ablationcam`` or ``drise`` (input-level, black
            box: ``methods.DRISE``). Defaults to 'gradcam'.
        target_layers (Sequence[str], optional): Layer paths; the detector's default
            (MMYOLO: all of ``neck.out_layers``; MMDetection: ``neck``) when None. Ignored by
            ``drise``, which works on the input image. Defaults to None.
        score_thr (float): Explain boxes scoring above this. Defaults to 0.3.
        topk (int): Explain at most this many boxes per image (best first); ``<= 0`` for all.
            Defaults to 10.
        batch_size (int): AblationCAM: ablated copies per forward; D-RISE: masked images per
            forward. Defaults to 32.
        ratio_channels_to_ablate (float): AblationCAM: share of channels ablated, in (0, 1].
            Defaults to 1.0.
        match_iou_thr (float): AblationCAM: an ablated prediction of the box's class counts as
            the box when its IoU is at least this. Defaults to 0.5.
        target (str): What gradient methods differentiate for a box. ``'logit'``: the sum of
            the logits behind its score, i.e. the class logit of its label at its prior, plus
            that prior's objectness logit for heads with objectness (YOLOv5, YOLOv7, YOLOX);
            no sigmoid at the end, so its gradient cannot underflow. ``'log_score'``: the log
            of its score (``logsigmoid`` of those logits, summed); the methods get
            ``score * grad(log score)`` = the gradient of the score (grad-cam's target), which
            underflows for logits above ~87 (such boxes are reported unreliable, see
            ``reliability.py``). Gradient-free methods ignore it: EigenCAM has no target, and
            AblationCAM weighs a channel by the relative drop of the box's score,
            ``(s - s_ablated) / s`` (grad-cam's formula). Defaults to 'logit' (chosen by
            measurement on the demo detector: ``benchmarks/bench_cam_targets.py``).
        num_masks (int): D-RISE: number of random masks. Defaults to 1000.
        grid_size (int): D-RISE: cells per side of the mask grid. Defaults to 16.
        keep_prob (float): D-RISE: probability that a grid cell is kept, in (0, 1).
            Defaults to 0.5.
        mask_seed (int, optional): D-RISE: seed of the masks' private generator (None: a new
            one from the OS each call); the global RNG is never used. Defaults to 0.
        drise_similarity (str): D-RISE: ``'box'`` (box IoU with every candidate) or
            ``'mask'`` (instance-mask IoU with the masked image's final detections;
            instance-segmentation detectors only). Defaults to 'box'.
        mask_sampling (str): D-RISE: ``'balanced'`` (each mask drawn as the paper's, in
            balanced blocks: the same map with less noise) or ``'random'`` (the paper's
            independent masks). Defaults to 'balanced'.
        keypoint (int, optional): Pose detectors: explain each person's keypoint ``j``
            instead of the person: gradient methods differentiate the visibility of keypoint
            ``j`` at the person's candidate (``target`` ``'logit'``: its visibility logit;
            ``'log_score'``: its log visibility score). Needs a gradient method (EigenCAM has
            no target; AblationCAM and D-RISE re-score boxes by their class score). Defaults
            to None: each box's class score.

    Raises:
        ValueError: Unsupported detector, unknown method or layer, bad option. A layer the box
            scores do not depend on is found by :meth:`check_target_layers` (one small
            forward), and by gradient methods when they run.
    """

    def __init__(self,
                 model: nn.Module,
                 method: Union[str, BoxCAMMethod] = 'gradcam',
                 target_layers: Optional[Sequence[str]] = None,
                 score_thr: float = 0.3,
                 topk: int = 10,
                 batch_size: int = 32,
                 ratio_channels_to_ablate: float = 1.0,
                 match_iou_thr: float = 0.5,
                 target: str = DEFAULT_TARGET,
                 num_masks: int = 1000,
                 grid_size: int = 16,
                 keep_prob: float = 0.5,
                 mask_seed: Optional[int] = 0,
                 drise_similarity: str = 'box',
                 mask_sampling: str = 'balanced',
                 keypoint: Optional[int] = None) -> None:
        self.detector = explainable_detector(model)
        self.check_options(method, score_thr, topk, batch_size, ratio_channels_to_ablate,
                           match_iou_thr, target, num_masks=num_masks, grid_size=grid_size,
                           keep_prob=keep_prob, mask_seed=mask_seed,
                           drise_similarity=drise_similarity,
                           mask_sampling=mask_sampling, keypoint=keypoint)
        name = method.lower() if isinstance(method, str) else None
        if name == AblationCAM.name:
            self.method = build_method(method, batch_size=batch_size,
                                       ratio_channels_to_ablate=ratio_channels_to_ablate)
        elif name == DRISE.name:
            if drise_similarity == 'mask' and not self.detector.predicts_masks:
                raise ValueError(f'BoxCAM: drise_similarity=\'mask\' needs instance masks; '
                                 f'{self.detector.head_name} ({self.detector.kind}) predicts '
                                 f'boxes only: use \'box\'')
            self.method = build_method(method, num_masks=num_masks, grid_size=grid_size,
                                       keep_prob=keep_prob, batch_size=batch_size,
                                       seed=mask_seed, similarity=drise_similarity,
                                       sampling=mask_sampling)
        else:
            self.method = build_method(method)
        if self.method.works_on_input:
            self.target_layers: List[str] = []  # the input is what is perturbed
        else:
            if target_layers is None:
                target_layers = self.detector.default_target_layers()
            self.target_layers = check_str_list('target_layers', target_layers,
                                                '"neck.out_layers[2]"')
        for path in self.target_layers:
            resolve_layer(self.detector.model, path)  # raises with the nearest valid names
        self.model = self.detector.model
        self.score_thr = float(score_thr)
        self.topk = topk
        self.match_iou_thr = float(match_iou_thr)
        self.target = target
        self.keypoint = keypoint
        if keypoint is not None:
            self._check_keypoint(keypoint)

    def _check_keypoint(self, keypoint: int) -> None:
        detector = self.detector
        if not detector.predicts_keypoints:
            raise ValueError(f'BoxCAM: keypoint={keypoint} needs a pose detector; '
                             f'{detector.head_name} ({detector.kind}) predicts no keypoints')
        if keypoint >= detector.num_keypoints:
            raise ValueError(f'BoxCAM: keypoint must be below {detector.num_keypoints} (the '
                             f'keypoints of {detector.head_name}), got {keypoint}')
        if not self.method.uses_gradients:
            raise ValueError(f'BoxCAM: keypoint targets need a gradient method; '
                             f'{self.method.name} has no keypoint target (EigenCAM has no '
                             f'target, AblationCAM and D-RISE re-score boxes by class score)')

    @staticmethod
    def check_options(method: Union[str, BoxCAMMethod] = 'gradcam', score_thr: float = 0.3,
                      topk: int = 10, batch_size: int = 32,
                      ratio_channels_to_ablate: float = 1.0, match_iou_thr: float = 0.5,
                      target: str = DEFAULT_TARGET, owner: Optional[str] = None,
                      num_masks: int = 1000, grid_size: int = 16, keep_prob: float = 0.5,
                      mask_seed: Optional[int] = 0, drise_similarity: str = 'box',
                      mask_sampling: str = 'balanced', keypoint: Optional[int] = None) -> None:
        """Checks the options without a model (hooks and tools call it before one exists).

        Raises:
            TypeError: An option of the wrong type. ValueError: a value outside what is
            accepted. With ``owner``, the message starts with it.
        """
        with owned_by(owner or 'BoxCAM'):
            if not isinstance(method, BoxCAMMethod):
                check_choice('method', method.lower() if isinstance(method, str) else method,
                             tuple(METHODS))
            check_number('score_thr', score_thr, 0, 1)
            check_number('match_iou_thr', match_iou_thr, 0, 1)
            check_int('topk', topk, accepted='an int (<= 0 for all boxes)')
            check_choice('target', target, TARGETS)
            if keypoint is not None:
                check_int('keypoint', keypoint, low=0,
                          accepted='None or a keypoint index (an int >= 0)')
            AblationCAM(batch_size, ratio_channels_to_ablate)  # its own checks
            DRISE(num_masks, grid_size, keep_prob, batch_size, mask_seed,
                  similarity=drise_similarity, sampling=mask_sampling)

    # ------------------------------------------------------------------ public
    def __call__(self, inputs: Tensor,
                 metas: Optional[Sequence[dict]] = None) -> List[BoxCAMResult]:
        """CAMs for a preprocessed batch ``(B, 3, H, W)`` (the data preprocessor's output).

        Args:
            inputs (Tensor): The batch.
            metas (Sequence[dict], optional): Each image's metainfo (``img_shape``,
                ``scale_factor``, ...): detectors that clip or rescale boxes with it during
                their post-processing select exactly their own detections. None: each image
                fills the whole input. Defaults to None.

        Returns:
            list[BoxCAMResult]: One per image.
        """
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError('inputs must be a (B, 3, H, W) tensor from the data preprocessor')
        metas = default_metas(inputs.shape[0], *inputs.shape[-2:]) if metas is None else \
            [dict(m) for m in metas]
        if len(metas) != inputs.shape[0]:
            raise ValueError(f'{len(metas)} metainfo dicts for a batch of {inputs.shape[0]}')
        # modes, requires_grad, .grad, buffers, RNG; float32 inside an autocast region too
        with preserved_model_state(self.model), autocast_off(self.model):
            self.model.eval()
            if self.method.works_on_input:
                with torch.no_grad():
                    return self._explain_input(inputs, metas)
            if self.method.uses_gradients:
                # No parameter needs a gradient: autograd then records the graph only from the
                # target layers on (their outputs become leaves, see _rebind), not through the
                # backbone, and no parameter can receive one.
                for param in self.model.parameters():
                    param.requires_grad_(False)
                with torch.enable_grad():
                    return self._explain(inputs, metas)
            with torch.no_grad():
                return self._explain(inputs, metas)

    def probe_target_layers(self, input_size: Optional[Tuple[int, int]] = None
                            ) -> Dict[str, str]:
        """Which target layers cannot carry a box CAM, and why, from ONE forward of zeros.

        The forward runs as a gradient method's does (eval mode, parameters frozen, the target
        layers' outputs as graph nodes) whatever this engine's method, and the model is
        restored afterwards (modes, ``requires_grad``, ``.grad``, buffers, RNG). A layer the
        scores depend on is one the autograd graph of all the head's scores reaches.

        Args:
            input_size (tuple[int, int], optional): ``(H, W)`` of the zero input; a multiple
                of the largest stride. Defaults to None: 64 x 64, grown where the detector
                needs more (``core.dummy_forward.dummy_input_size``).

        Returns:
            dict[str, str]: Per layer (or ``layer[i]`` output) that did not run, gave no 4-D
            map, or that the scores do not depend on, the reason; empty when all are usable
            (always for input-level methods, which have no target layers). A layer with
            several outputs is refused only when the scores depend on none of them; the
            outputs they do not depend on are left out of the maps.
        """
        if not self.target_layers:
            return {}
        missing, keys, sources, unused = self._probe_dependence(input_size)
        self.detector.unused_outputs[self._unused_key] = unused
        problems: Dict[str, str] = {}  # in the order of target_layers
        for path in self.target_layers:
            if path in missing:
                problems[path] = missing[path]
            path_keys = [key for key, source in zip(keys, sources) if source.path == path]
            if all(key in unused for key in path_keys):  # else its unused outputs are dropped
                problems.update({key: _not_depending_reason(self.detector) for key in path_keys})
        return problems

    @property
    def _differentiates_logits(self) -> bool:
        return self.method.uses_gradients and self.target == 'logit'

    @property
    def _unused_key(self) -> Tuple[Tuple[str, ...], bool]:
        """Which outputs the scores skip depends on the layers and on what is scored."""
        return tuple(self.target_layers), self._differentiates_logits

    def _probe_dependence(self, input_size: Optional[Tuple[int, int]]):
        """One forward of zeros as a gradient method runs it: the layers that gave no map,
        and the output keys, sources and the keys the scores' graph does not reach."""
        with preserved_model_state(self.model):
            # blank images with their metainfo, grown for DETRs that pick queries from them
            data = dummy_batch(self.model, dummy_input_size(self.model, input_size or (64, 64)))
            inputs = data['inputs']
            metas = [dict(sample.metainfo) for sample in data['data_samples']]
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            with torch.enable_grad(), _GradientCapture(self.model, self.target_layers) as cap:
                feats = self.detector.extract_feat(inputs)
                cap.token_grids = self.detector.token_grids(feats)
                preds = FlatPredictions.cat(self.detector.level_candidates(feats, metas=metas))
            # what this engine differentiates (a gradient method's logit target may reach
            # fewer layers than the scores: Mask2Former's class logits do not read the mask
            # features, its mask scores do), else what it re-scores
            scores = preds.logits if self._differentiates_logits else preds.log_scores
            missing = cap.missing_maps()
            keys, sources, acts = _layer_outputs(cap)
            with torch.enable_grad():  # also when a gradient-free method runs this
                unused = set(_not_depending(scores, keys, acts))
        return missing, keys, sources, unused

    def _unused_outputs(self, sources: Sequence[OutputSource],
                        input_size: Tuple[int, int]) -> Set[str]:
        """Outputs of multi-output target layers that the box scores do not depend on (the
        FPN level only Faster R-CNN's RPN reads): left out of every method's maps. Found once
        per detector adapter and set of target layers (engines sharing an adapter share it)
        with one forward of blank images of the explained inputs' size (a smaller one can be
        too small for the model, e.g. a deformable convolution's kernel at the last stage),
        and only where a target layer returns several maps."""
        key = self._unused_key
        if key not in self.detector.unused_outputs:
            several = any(sum(s.path == path for s in sources) > 1
                          for path in self.target_layers)
            self.detector.unused_outputs[key] = \
                self._probe_dependence(input_size)[3] if several else set()
        return self.detector.unused_outputs[key]

    def check_target_layers(self, input_size: Optional[Tuple[int, int]] = None) -> None:
        """Raises ValueError naming every target layer :meth:`probe_target_layers` rejects."""
        problems = self.probe_target_layers(input_size)
        if problems:
            raise ValueError(target_layer_error(self.detector, problems))

    def explain_data(self, data: dict) -> Tuple[List[BoxCAMResult], List[dict]]:
        """CAMs for a collated batch straight from a test pipeline (``pseudo_collate``): the
        model's data preprocessor runs first (eval mode, no augmentation).

        Returns:
            tuple: The results and each image's metainfo (for ``box_maps(meta)``).
        """
        processed = self.model.data_preprocessor(data, False)
        metas = [dict(sample.metainfo) for sample in processed['data_samples']]
        return self(processed['inputs'], metas), metas

    # ------------------------------------------------------------------ internals
    def _forward(self, inputs: Tensor, metas: Optional[List[dict]]):
        model = self.model
        capture = _GradientCapture(model, self.target_layers) if self.method.uses_gradients \
            else ActivationCapture(model, self.target_layers, detach=True, to_cpu=False)
        with capture:
            feats = self.detector.extract_feat(inputs)
            capture.token_grids = self.detector.token_grids(feats)
            preds = FlatPredictions.cat(self.detector.level_candidates(feats, metas=metas))
        missing = capture.missing_maps()
        if missing:
            raise ValueError(target_layer_error(self.detector, missing))
        keys, sources, acts = _layer_outputs(capture)
        unused = self._unused_outputs(sources, tuple(inputs.shape[-2:]))
        if unused:
            kept = [i for i, key in enumerate(keys) if key not in unused]
            keys, sources, acts = ([v[i] for i in kept] for v in (keys, sources, acts))
        empty = {key: tuple(act.shape) for key, act in zip(keys, acts) if 0 in act.shape[-2:]}
        if empty:
            raise ValueError(f'empty feature maps (no pixels) from the target layers: {empty}')
        return feats, preds, keys, sources, acts

    def _explain(self, inputs: Tensor, metas: Optional[List[dict]]) -> List[BoxCAMResult]:
        feats, preds, keys, sources, acts = self._forward(inputs, metas)
        dets = self.detector.select(preds, self.score_thr, self.topk, metas)
        grads = self._box_gradients(preds, dets, keys, acts) \
            if self.method.uses_gradients else None
        results = []
        height, width = inputs.shape[-2:]
        for b, det in enumerate(dets):
            layer_maps, layer_noise = [], []
            for li, act in enumerate(acts):
                h, w = act.shape[-2:]
                if len(det) == 0:
                    layer_maps.append(act.new_zeros((0, h, w)))
                    layer_noise.append(torch.zeros(0, dtype=torch.bool))
                    continue
                ctx = LayerContext(
                    activation=act[b].detach(),
                    grads=None if grads is None else grads[li][b],
                    box_mask=box_masks(det.boxes, (h, w), (width / w, height / h)))
                if self.method.needs_rescoring:
                    ctx.rescore = self._rescorer(inputs, feats, sources[li], b, det, metas,
                                                 preds.proposals)
                    ctx.base_log_scores = preds.log_scores[b, det.priors, det.labels].detach()
                raw, magnitude = self.method.map_and_magnitude(ctx)
                layer_maps.append(raw.detach())
                layer_noise.append(at_noise_level(raw, magnitude).cpu())
            noise = torch.stack(layer_noise, dim=1)
            grad_peak = None if grads is None or len(det) == 0 else torch.stack(
                [grads[li][b].abs().flatten(1).amax(dim=1) for li in range(len(acts))],
                dim=1).amax(dim=1).cpu()
            results.append(BoxCAMResult(det, layer_maps, keys, (height, width), self.method.name,
                                        noise, box_reasons(noise, grad_peak), self.target,
                                        self.keypoint))
        return results

    def _predict(self, inputs: Tensor, metas: Optional[List[dict]] = None) -> FlatPredictions:
        """Flat predictions of a batch (the caller sets eval mode and no_grad); the batch in
        the network's fastest layout (no gradients flow here, so only speed changes). A batch
        of ``n`` modified copies of one image takes that image's ``metas``."""
        return self.detector.candidates(in_network_layout(inputs, self.model), metas)

    def _final(self, preds: FlatPredictions, metas: Optional[List[dict]]
               ) -> List[ExplainedBoxes]:
        """The final detections of a batch of modified copies of one image: the detector's
        own selection at its own candidate threshold (with masks where it predicts them)."""
        copies = preds.scores.shape[0]
        cfg = self.detector.test_cfg or {}
        return self.detector.select(preds, self.detector.candidate_thr,
                                    int(cfg.get('max_per_img', 100) or 100),
                                    None if metas is None else metas[:1] * copies)

    def _explain_input(self, inputs: Tensor, metas: Optional[List[dict]]) -> List[BoxCAMResult]:
        """Input-level methods: one map per box on the network input, as one layer."""
        preds = self._predict(inputs, metas)
        dets = self.detector.select(preds, self.score_thr, self.topk, metas)
        height, width = inputs.shape[-2:]
        results = []
        for b, det in enumerate(dets):
            if len(det) == 0:
                raw = inputs.new_zeros((0, height, width))
                noise = torch.zeros((0, 1), dtype=torch.bool)
            else:
                image_metas = None if metas is None else [metas[b]]
                ctx = InputContext(image=inputs[b], boxes=det, predictions=preds.image(b),
                                   predict=lambda batch, m=image_metas: self._predict(batch, m),
                                   select=lambda masked, m=image_metas: self._final(masked, m))
                raw, magnitude = self.method.input_map_and_magnitude(ctx)
                noise = at_noise_level(raw, magnitude).cpu()[:, None]
            results.append(BoxCAMResult(det, [raw.detach()], ['input'], (height, width),
                                        self.method.name, noise, box_reasons(noise, None),
                                        self.target))
        return results

    def _box_gradients(self, preds: FlatPredictions, dets: List[ExplainedBoxes],
                       keys: List[str], acts: List[Tensor]) -> List[List[Tensor]]:
        """Per layer, per image, ``(K_b, C, h, w)``: gradient of each box's target
        (``self.target``; with ``self.keypoint``, of that keypoint's visibility at the box's
        candidate): the sum of its logits, or its score taken as
        ``score * grad(log score)`` (the same gradient, without ``sigmoid``'s float32 underflow
        for logits above ~17; ``grad(log score)`` itself underflows above ~87).

        Raises:
            ValueError: The scores do not depend on some target layer (instead of autograd's
                "does not require grad" / "appears to not have been used in the graph").
        """
        index = [(b, int(p), int(c)) for b, det in enumerate(dets)
                 for p, c in zip(det.priors, det.labels)]
        if not index:
            return [[a.new_zeros((0, *a.shape[1:])) for _ in dets] for a in acts]
        bi, pi, ci = (torch.tensor(v, device=preds.scores.device) for v in zip(*index))
        if self.keypoint is None:
            logits, log_scores, scores = preds.logits, preds.log_scores, preds.scores
        else:  # keypoint j's visibility at the box's candidate, whatever its class
            logits, log_scores, scores = (preds.keypoint_logits, preds.keypoint_log_scores,
                                          preds.keypoint_scores)
            ci = torch.full_like(ci, self.keypoint)
        if self.target == 'logit':
            targets = logits[bi, pi, ci]
            scale = torch.ones_like(targets.detach())
        else:
            targets = log_scores[bi, pi, ci]
            scale = scores[bi, pi, ci].detach()
        if not targets.requires_grad:
            self._raise_not_depending(keys)
        total = targets.numel()
        try:
            if not self.detector.batched_gradients:
                raise RuntimeError('the kind asks for one backward pass a box')
            eye = torch.eye(total, dtype=targets.dtype, device=targets.device)
            # retain_graph: a failing batched pass must leave the graph for the fallback
            flat = torch.autograd.grad(targets, acts, grad_outputs=eye, is_grads_batched=True,
                                       allow_unused=True, retain_graph=True)
        except RuntimeError:  # an op without a batching rule (mmcv's RoIAlign): one VJP a box
            per_box = [torch.autograd.grad(targets[k], acts, retain_graph=True,
                                           allow_unused=True) for k in range(total)]
            flat = [None if per_box[0][li] is None else
                    torch.stack([g[li] for g in per_box]) for li in range(len(acts))]
        # Targets index the flat scores of every level: a layer feeding any score is reached.
        unused = [key for key, grad in zip(keys, flat) if grad is None]
        if unused:
            self._raise_not_depending(unused)
        out = []
        for li, act in enumerate(acts):
            grad = flat[li] * scale.view(-1, *([1] * act.dim()))
            # row k holds the gradient of target k; keep its own image only
            per_image, start = [], 0
            for b, det in enumerate(dets):
                k = len(det)
                per_image.append(grad[start:start + k, b].detach())
                start += k
            out.append(per_image)
        return out

    def _raise_not_depending(self, keys: Sequence[str]) -> None:
        reason = _not_depending_reason(self.detector)
        raise ValueError(target_layer_error(self.detector, {key: reason for key in keys}))

    def _rescorer(self, inputs: Tensor, feats, source: OutputSource, b: int,
                  det: ExplainedBoxes, metas: Optional[List[dict]],
                  proposals: Optional[Tensor] = None) -> Callable[[Tensor], Tensor]:
        """Scores of the boxes when one layer output of image ``b`` is replaced by a batch."""
        detector = self.detector
        path, index, num_outputs = source.path, source.index, source.num_outputs
        module = resolve_layer(self.model, path)
        level = detector.head_input_level(module, index, num_outputs)
        image_metas = None if metas is None else [metas[b]]
        image_proposals = None if proposals is None else proposals[b:b + 1]

        def rescore(batch: Tensor) -> Tensor:
            n = batch.shape[0]
            if level is not None:
                # The layer output is head input `level` and feeds nothing else: rerun the head
                # only, with the other levels at batch 1 (every supported head runs its levels
                # independently, so their batch sizes need not match).
                new_feats = [f[b:b + 1] for f in feats]
                new_feats[level] = batch
                return detector.rescore(new_feats, det.labels, det, self.match_iou_thr,
                                        image_metas, image_proposals)
            # the whole forward with the output swapped (the layer may run after the
            # features: a DETR's encoder)
            with _ReplaceOutput(module, index, source.call, source.token_grids) as swap:
                swap.value = batch
                new_feats = detector.extract_feat(inputs[b:b + 1].expand(n, *inputs.shape[1:]))
                return detector.rescore(new_feats, det.labels, det, self.match_iou_thr,
                                        image_metas, image_proposals)
        return rescore

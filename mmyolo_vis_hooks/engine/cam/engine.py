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
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..core.devices import in_network_layout
from ..core.geometry import original_size
from ..core.layers import ActivationCapture, OutputSource, flatten_output, resolve_layer
from ..core.model_state import preserved_model_state
from .compose import box_masks, compose_box_maps
from ..core.checks import check_choice, check_int, check_number, check_str_list, owned_by
from .methods import (DRISE, METHODS, AblationCAM, BoxCAMMethod, InputContext, LayerContext,
                      build_method)
from .predictions import (ExplainedBoxes, FlatPredictions, detector_family, flat_predictions,
                          level_predictions, matched_log_scores, select_boxes)
from .reliability import at_noise_level, box_reasons

# What a gradient method differentiates for a box (see BoxCAM's ``target``).
TARGETS = ('logit', 'log_score')
DEFAULT_TARGET = 'logit'


def default_target_layers(model: nn.Module) -> List[str]:
    """``neck.out_layers[i]`` for every level of the detector's neck.

    Raises:
        ValueError: The neck has no ``out_layers`` (pass target layers explicitly).
    """
    neck = getattr(model, 'neck', None)
    out_layers = getattr(neck, 'out_layers', None)
    if not isinstance(out_layers, nn.ModuleList) or not len(out_layers):
        raise ValueError(f'{type(neck).__name__} has no out_layers: pass target_layers '
                         f'explicitly (e.g. "neck", or "backbone.stage4")')
    return [f'neck.out_layers[{i}]' for i in range(len(out_layers))]


def target_layer_error(model: nn.Module, problems: Dict[str, str]) -> str:
    """The message for target layers (or ``layer[i]`` outputs) that cannot carry a box CAM:
    each one with its reason, then what is accepted."""
    listed = '; '.join(f'{key!r} {why}' for key, why in problems.items())
    try:
        examples = 'backbone and neck layers such as ' + ', '.join(
            repr(p) for p in default_target_layers(model)) + ' (the default)'
    except ValueError:
        examples = 'backbone and neck layers such as "backbone.stage4"'
    return (f'these target layers cannot be explained by box CAMs: {listed}. A box CAM shows '
            f'how a layer the box score is computed from contributes to it (for every method: '
            f'on another layer EigenCAM and AblationCAM maps say nothing about the boxes). '
            f'Accepted: layers with a 4-D (N, C, H, W) output that the scores of '
            f'{type(model.bbox_head).__name__} depend on: {examples}, or layers of the head\'s '
            f'classification/objectness branch (not its box-regression branch). '
            f'--preview-model (tools/boxam_vis.py) lists every layer.')


def _not_depending_reason(model: nn.Module) -> str:
    return (f'does not feed the box scores (the scores of {type(model.bbox_head).__name__} do '
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
    of the module (counted from entering the context: use one context per forward)."""

    def __init__(self, module: nn.Module, index: int, call: int = 0) -> None:
        self.module, self.index, self.call, self.value, self.handle = \
            module, index, call, None, None

    def __enter__(self):
        calls = itertools.count()

        def swap(module, inputs, output):
            if next(calls) != self.call:
                return None
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
    """
    detections: ExplainedBoxes
    layer_maps: List[Tensor]
    layer_keys: List[str]
    input_size: Tuple[int, int]
    method: str
    layer_noise: Tensor
    reasons: List[str]
    target: str = DEFAULT_TARGET

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
        layers at noise level are left out, and an unreliable box's map is zero."""
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
    """Per-box class activation maps for MMYOLO detectors.

    Construction checks the model and the layers and builds nothing else; the model is only
    touched inside :meth:`__call__`, which runs it in eval mode and restores every module's
    mode, ``requires_grad``, ``.grad``, buffers and the RNG state afterwards.

    Args:
        model (nn.Module): An (unwrapped) MMYOLO detector: YOLOv5, YOLOv6, YOLOv7, YOLOv8,
            YOLOX, RTMDet or PPYOLOE.
        method (str | BoxCAMMethod): ``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``,
            ``eigengradcam``, ``eigencam``, ``ablationcam`` or ``drise`` (input-level, black
            box: ``methods.DRISE``). Defaults to 'gradcam'.
        target_layers (Sequence[str], optional): Layer paths; all of ``neck.out_layers`` when
            None. Ignored by ``drise``, which works on the input image. Defaults to None.
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
                 mask_seed: Optional[int] = 0) -> None:
        self.family = detector_family(model)
        self.check_options(method, score_thr, topk, batch_size, ratio_channels_to_ablate,
                           match_iou_thr, target, num_masks=num_masks, grid_size=grid_size,
                           keep_prob=keep_prob, mask_seed=mask_seed)
        name = method.lower() if isinstance(method, str) else None
        if name == AblationCAM.name:
            self.method = build_method(method, batch_size=batch_size,
                                       ratio_channels_to_ablate=ratio_channels_to_ablate)
        elif name == DRISE.name:
            self.method = build_method(method, num_masks=num_masks, grid_size=grid_size,
                                       keep_prob=keep_prob, batch_size=batch_size,
                                       seed=mask_seed)
        else:
            self.method = build_method(method)
        if self.method.works_on_input:
            self.target_layers: List[str] = []  # the input is what is perturbed
        else:
            if target_layers is None:
                target_layers = default_target_layers(model)
            self.target_layers = check_str_list('target_layers', target_layers,
                                                '"neck.out_layers[2]"')
        for path in self.target_layers:
            resolve_layer(model, path)  # raises with the nearest valid names
        self.model = model
        self.score_thr = float(score_thr)
        self.topk = topk
        self.match_iou_thr = float(match_iou_thr)
        self.target = target

    @staticmethod
    def check_options(method: Union[str, BoxCAMMethod] = 'gradcam', score_thr: float = 0.3,
                      topk: int = 10, batch_size: int = 32,
                      ratio_channels_to_ablate: float = 1.0, match_iou_thr: float = 0.5,
                      target: str = DEFAULT_TARGET, owner: Optional[str] = None,
                      num_masks: int = 1000, grid_size: int = 16, keep_prob: float = 0.5,
                      mask_seed: Optional[int] = 0) -> None:
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
            AblationCAM(batch_size, ratio_channels_to_ablate)  # its own checks
            DRISE(num_masks, grid_size, keep_prob, batch_size, mask_seed)

    # ------------------------------------------------------------------ public
    def __call__(self, inputs: Tensor) -> List[BoxCAMResult]:
        """CAMs for a preprocessed batch ``(B, 3, H, W)`` (the data preprocessor's output).

        Returns:
            list[BoxCAMResult]: One per image.
        """
        if not isinstance(inputs, Tensor) or inputs.dim() != 4:
            raise ValueError('inputs must be a (B, 3, H, W) tensor from the data preprocessor')
        with preserved_model_state(self.model):  # modes, requires_grad, .grad, buffers, RNG
            self.model.eval()
            if self.method.works_on_input:
                with torch.no_grad():
                    return self._explain_input(inputs)
            if self.method.uses_gradients:
                # No parameter needs a gradient: autograd then records the graph only from the
                # target layers on (their outputs become leaves, see _rebind), not through the
                # backbone, and no parameter can receive one.
                for param in self.model.parameters():
                    param.requires_grad_(False)
                with torch.enable_grad():
                    return self._explain(inputs)
            with torch.no_grad():
                return self._explain(inputs)

    def probe_target_layers(self, input_size: Tuple[int, int] = (64, 64)) -> Dict[str, str]:
        """Which target layers cannot carry a box CAM, and why, from ONE forward of zeros.

        The forward runs as a gradient method's does (eval mode, parameters frozen, the target
        layers' outputs as graph nodes) whatever this engine's method, and the model is
        restored afterwards (modes, ``requires_grad``, ``.grad``, buffers, RNG). A layer the
        scores depend on is one the autograd graph of all the head's scores reaches.

        Args:
            input_size (tuple[int, int]): ``(H, W)`` of the zero input; a multiple of the
                largest stride. Defaults to (64, 64).

        Returns:
            dict[str, str]: Per layer (or ``layer[i]`` output) that did not run, gave no 4-D
            map, or that the scores do not depend on, the reason; empty when all are usable
            (always for input-level methods, which have no target layers).
        """
        if not self.target_layers:
            return {}
        param = next(self.model.parameters(), None)
        inputs = torch.zeros((1, 3, *input_size), device=param.device if param is not None
                             else 'cpu')
        with preserved_model_state(self.model):
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            with torch.enable_grad(), _GradientCapture(self.model, self.target_layers) as cap:
                scores = flat_predictions(self.model.bbox_head, self.model.bbox_head(
                    self.model.extract_feat(inputs))).log_scores
            missing = cap.missing_maps()
            keys, sources, acts = _layer_outputs(cap)
            unused = set(_not_depending(scores, keys, acts))
        problems: Dict[str, str] = {}  # in the order of target_layers
        for path in self.target_layers:
            if path in missing:
                problems[path] = missing[path]
            problems.update({key: _not_depending_reason(self.model)
                             for key, source in zip(keys, sources)
                             if source.path == path and key in unused})
        return problems

    def check_target_layers(self, input_size: Tuple[int, int] = (64, 64)) -> None:
        """Raises ValueError naming every target layer :meth:`probe_target_layers` rejects."""
        problems = self.probe_target_layers(input_size)
        if problems:
            raise ValueError(target_layer_error(self.model, problems))

    def explain_data(self, data: dict) -> Tuple[List[BoxCAMResult], List[dict]]:
        """CAMs for a collated batch straight from a test pipeline (``pseudo_collate``): the
        model's data preprocessor runs first (eval mode, no augmentation).

        Returns:
            tuple: The results and each image's metainfo (for ``box_maps(meta)``).
        """
        processed = self.model.data_preprocessor(data, False)
        metas = [dict(sample.metainfo) for sample in processed['data_samples']]
        return self(processed['inputs']), metas

    # ------------------------------------------------------------------ internals
    def _forward(self, inputs: Tensor):
        model = self.model
        capture = _GradientCapture(model, self.target_layers) if self.method.uses_gradients \
            else ActivationCapture(model, self.target_layers, detach=True, to_cpu=False)
        with capture:
            feats = model.extract_feat(inputs)
            preds = flat_predictions(model.bbox_head, model.bbox_head(feats))
        missing = capture.missing_maps()
        if missing:
            raise ValueError(target_layer_error(model, missing))
        keys, sources, acts = _layer_outputs(capture)
        empty = {key: tuple(act.shape) for key, act in zip(keys, acts) if 0 in act.shape[-2:]}
        if empty:
            raise ValueError(f'empty feature maps (no pixels) from the target layers: {empty}')
        return feats, preds, keys, sources, acts

    def _explain(self, inputs: Tensor) -> List[BoxCAMResult]:
        feats, preds, keys, sources, acts = self._forward(inputs)
        head = self.model.bbox_head
        dets = select_boxes(preds, head.test_cfg, self.score_thr, self.topk)
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
                    ctx.rescore = self._rescorer(inputs, feats, sources[li], b, det)
                    ctx.base_log_scores = preds.log_scores[b, det.priors, det.labels].detach()
                raw, magnitude = self.method.map_and_magnitude(ctx)
                layer_maps.append(raw.detach())
                layer_noise.append(at_noise_level(raw, magnitude).cpu())
            noise = torch.stack(layer_noise, dim=1)
            grad_peak = None if grads is None or len(det) == 0 else torch.stack(
                [grads[li][b].abs().flatten(1).amax(dim=1) for li in range(len(acts))],
                dim=1).amax(dim=1).cpu()
            results.append(BoxCAMResult(det, layer_maps, keys, (height, width), self.method.name,
                                        noise, box_reasons(noise, grad_peak), self.target))
        return results

    def _predict(self, inputs: Tensor) -> FlatPredictions:
        """Flat predictions of a batch (the caller sets eval mode and no_grad); the batch in
        the network's fastest layout (no gradients flow here, so only speed changes)."""
        head = self.model.bbox_head
        return flat_predictions(head, head(self.model.extract_feat(in_network_layout(inputs))))

    def _explain_input(self, inputs: Tensor) -> List[BoxCAMResult]:
        """Input-level methods: one map per box on the network input, as one layer."""
        preds = self._predict(inputs)
        dets = select_boxes(preds, self.model.bbox_head.test_cfg, self.score_thr, self.topk)
        height, width = inputs.shape[-2:]
        results = []
        for b, det in enumerate(dets):
            if len(det) == 0:
                raw = inputs.new_zeros((0, height, width))
                noise = torch.zeros((0, 1), dtype=torch.bool)
            else:
                obj = preds.objectness
                image_preds = FlatPredictions(
                    preds.scores[b:b + 1], preds.log_scores[b:b + 1], preds.logits[b:b + 1],
                    preds.boxes[b:b + 1], preds.levels, None if obj is None else obj[b:b + 1])
                ctx = InputContext(image=inputs[b], boxes=det, predictions=image_preds,
                                   predict=self._predict)
                raw, magnitude = self.method.input_map_and_magnitude(ctx)
                noise = at_noise_level(raw, magnitude).cpu()[:, None]
            results.append(BoxCAMResult(det, [raw.detach()], ['input'], (height, width),
                                        self.method.name, noise, box_reasons(noise, None),
                                        self.target))
        return results

    def _box_gradients(self, preds: FlatPredictions, dets: List[ExplainedBoxes],
                       keys: List[str], acts: List[Tensor]) -> List[List[Tensor]]:
        """Per layer, per image, ``(K_b, C, h, w)``: gradient of each box's target
        (``self.target``): the sum of its logits, or its score taken as
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
        if self.target == 'logit':
            targets = preds.logits[bi, pi, ci]
            scale = torch.ones_like(targets.detach())
        else:
            targets = preds.log_scores[bi, pi, ci]
            scale = preds.scores[bi, pi, ci].detach()
        if not targets.requires_grad:
            self._raise_not_depending(keys)
        total = targets.numel()
        try:
            eye = torch.eye(total, dtype=targets.dtype, device=targets.device)
            flat = torch.autograd.grad(targets, acts, grad_outputs=eye, is_grads_batched=True,
                                       allow_unused=True)
        except RuntimeError:  # an op without a batching rule: one VJP per box
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
        reason = _not_depending_reason(self.model)
        raise ValueError(target_layer_error(self.model, {key: reason for key in keys}))

    def _rescorer(self, inputs: Tensor, feats, source: OutputSource, b: int,
                  det: ExplainedBoxes) -> Callable[[Tensor], Tensor]:
        """Scores of the boxes when one layer output of image ``b`` is replaced by a batch."""
        model = self.model
        head = model.bbox_head
        candidate_thr = float((head.test_cfg or {}).get('score_thr', 0.001) or 0.0)
        path, index, num_outputs = source.path, source.index, source.num_outputs
        module = resolve_layer(model, path)
        level = self._head_input_level(module, num_outputs)

        def rescore(batch: Tensor) -> Tensor:
            n = batch.shape[0]
            if level is not None:
                # The layer output is head input `level` and feeds nothing else: rerun the head
                # only, with the other levels at batch 1 (every supported head runs its levels
                # independently, so their batch sizes need not match).
                new_feats = [f[b:b + 1] for f in feats]
                new_feats[level] = batch
                outputs = head(tuple(new_feats))
            else:
                with _ReplaceOutput(module, index, source.call) as swap:
                    swap.value = batch
                    outputs = head(model.extract_feat(
                        inputs[b:b + 1].expand(n, *inputs.shape[1:])))
            per_level = level_predictions(head, outputs, classes=det.labels)
            return matched_log_scores(per_level, det, candidate_thr, self.match_iou_thr)
        return rescore

    def _head_input_level(self, module: nn.Module, num_outputs: int) -> Optional[int]:
        """``i`` when ``module`` is ``neck.out_layers[i]`` (its output is head input ``i`` and
        feeds nothing else), else None."""
        out_layers = getattr(getattr(self.model, 'neck', None), 'out_layers', None)
        if num_outputs != 1 or not isinstance(out_layers, nn.ModuleList):
            return None
        for level, layer in enumerate(out_layers):
            if layer is module:
                return level
        return None

"""Layer paths and activation capture.

A layer path is a dotted module path with optional indexing, as users write it in configs:
``backbone``, ``neck.out_layers[2]``, ``backbone.stage4.1``. Paths are parsed, never ``eval``-ed.
"""
import difflib
import re
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from .dummy_forward import prepare_dummy_forward
from .model_state import preserved_modes

_TOKEN = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)|\[(-?\d+)\]|(\d+)')


def _parse(path: str) -> List[str]:
    if not isinstance(path, str):
        raise TypeError(f'a layer path must be a string such as "neck.out_layers[2]", got '
                        f'{path!r} ({type(path).__name__})')
    if not path.strip():
        raise ValueError(f'a layer path must be a non-empty string, got {path!r}')
    parts: List[str] = []
    for segment in path.strip().split('.'):
        pos = 0
        if not segment:
            raise ValueError(f'layer path {path!r} has an empty segment; expected dotted names '
                             f'with optional [index], e.g. "neck.out_layers[2]"')
        while pos < len(segment):
            match = _TOKEN.match(segment, pos)
            if match is None or (pos > 0 and match.group(2) is None):
                raise ValueError(
                    f'cannot parse layer path {path!r} at {segment[pos:]!r}; expected dotted '
                    f'names with optional [index], e.g. "neck.out_layers[2]"')
            parts.append(match.group(1) or match.group(2) or match.group(3))
            pos = match.end()
    return parts


def canonical_name(module_name: str) -> str:
    """``neck.out_layers.2`` (PyTorch's ``named_modules`` form) -> ``neck.out_layers[2]``."""
    return re.sub(r'\.(\d+)(?=\.|$)', r'[\1]', module_name)


def layer_names(model: nn.Module) -> List[str]:
    """All addressable layer paths of ``model`` in canonical form, in registration order."""
    return [canonical_name(name) for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, path: str) -> nn.Module:
    """Returns the sub-module at ``path``.

    Raises:
        ValueError: The path does not name a sub-module; the message lists the nearest
            valid paths.
    """
    module = model
    for part in _parse(path):
        child: Optional[nn.Module] = None
        if part.lstrip('-').isdigit():
            if isinstance(module, (nn.ModuleList, nn.Sequential)):
                index = int(part)
                if -len(module) <= index < len(module):
                    child = module[index]
            else:
                child = getattr(module, '_modules', {}).get(part)
        else:
            child = getattr(module, '_modules', {}).get(part)
        if not isinstance(child, nn.Module):
            names = layer_names(model)
            nearest = difflib.get_close_matches(canonical_name(path), names, n=5, cutoff=0.4)
            hint = ', '.join(nearest) if nearest else ', '.join(
                n for n in names if '.' not in n and '[' not in n)
            raise ValueError(
                f'unknown layer {path!r} in {type(model).__name__}; nearest valid layers: '
                f'{hint}. Use --preview-model (tools) to list every layer.')
        module = child
    return module


def flatten_output(output) -> List[torch.Tensor]:
    """A module output as a list of tensors: tuples/lists are flattened one level."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [o for o in output if isinstance(o, torch.Tensor)]
    return []


def split_tokens(tokens: torch.Tensor, grids: Sequence[Tuple[int, int]]
                 ) -> Optional[List[torch.Tensor]]:
    """A transformer's token sequence ``(B, L, C)`` as its per-level maps ``(B, C, h, w)``
    (views), when ``L`` is the number of cells of ``grids`` (``(h, w)`` per level, in token
    order, row-major: how MMDetection's DETRs flatten their feature levels); else None."""
    if tokens.dim() != 3 or not grids or tokens.shape[1] != sum(h * w for h, w in grids):
        return None
    maps, start = [], 0
    for h, w in grids:
        maps.append(tokens[:, start:start + h * w].transpose(1, 2).unflatten(2, (h, w)))
        start += h * w
    return maps


def join_tokens(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The inverse of :func:`split_tokens`: per-level maps ``(B, C, h, w)`` as one token
    sequence ``(B, L, C)``."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def describe_output(output, depth: int = 0) -> str:
    """A short description of a module output for error messages: ``Tensor[1, 16, 32, 32]``,
    ``tuple(list[3], list[3], list[3])``, ``dict``, ``NoneType``."""
    if isinstance(output, torch.Tensor):
        return f'Tensor{list(output.shape)}'
    if isinstance(output, (tuple, list)):
        name = type(output).__name__
        if depth >= 1:
            return f'{name}[{len(output)}]'
        items = [describe_output(o, depth + 1) for o in output[:4]]
        return f'{name}({", ".join(items)}{", ..." if len(output) > 4 else ""})'
    return type(output).__name__


def output_key(path: str, call: int = 0, num_calls: int = 1, index: int = 0,
               num_outputs: int = 1) -> str:
    """Name of one captured map: the layer path, then ``@<call>`` when its module runs more
    than once per forward, then ``[<i>]`` when the module returns a tuple/list.

    ``neck`` + tuple output -> ``neck[0]``, ``neck[1]``, ...; RTMDet's head convolution shared
    by every pyramid level -> ``bbox_head.head_module.cls_convs[0][0].conv@0``, ``@1``, ``@2``
    (call order = level order); both -> ``<layer>@1[0]`` (element 0 of the second call).
    """
    key = path if num_calls == 1 else f'{path}@{call}'
    return key if num_outputs == 1 else f'{key}[{index}]'


class OutputSource(NamedTuple):
    """Where one captured tensor comes from.

    Attributes:
        key (str): Its name, :func:`output_key`.
        path (str): The target layer path.
        call (int): Which call of the layer's module in the forward (0 for the first).
        num_calls (int): How many times the module ran in the forward.
        index (int): Which element of that call's (flattened) output.
        num_outputs (int): How many tensors that call returned.
        token_grids (tuple, optional): When the layer returned a transformer's token
            sequence, split into one map per level (:func:`split_tokens`): ``(h, w)`` of each
            level, and ``index`` is the level. Defaults to None.
    """
    key: str
    path: str
    call: int
    num_calls: int
    index: int
    num_outputs: int
    token_grids: Optional[Tuple[Tuple[int, int], ...]] = None


class ActivationCapture:
    """Records the outputs of chosen layers during forward passes, every call of them.

    A module may run several times in one forward: RTMDet's head applies the same
    convolutions (``share_conv=True``) to every pyramid level. Each call is kept, in call
    order, and named ``<layer>@<call>`` (:func:`output_key`); a module that runs once keeps the
    plain ``<layer>``. Calls accumulate until :meth:`clear` (entering the context clears), so
    a capture reused across forwards is cleared before each one it records.

    A layer that returns a transformer's token sequence ``(B, L, C)`` (a DETR's encoder) is
    recorded as one map per feature level when :attr:`token_grids` is set to the levels'
    ``(h, w)`` before that layer runs (the detector adapter's ``token_grids(feats)``).

    Used as a context manager; the forward hooks are removed on exit whatever happens.

    Args:
        model (nn.Module): The (unwrapped) model.
        paths (Sequence[str]): Layer paths, resolved at construction.
        detach (bool): Store detached clones (feature maps) instead of the live graph tensors
            (CAM gradients). Cloning guards against later in-place ops. Defaults to True.
        to_cpu (bool): Move detached outputs to the CPU. Defaults to True.

    Attributes:
        calls (OrderedDict[str, list[list[Tensor]]]): Per path, one entry per call of its
            module, each the list of tensors of that call's output (one per element of a
            tuple output), batch first.
        output_types (dict[str, str]): Per path, :func:`describe_output` of its first output
            (what a layer returned when none of it is a 4-D map).
        enabled (bool): Set False to let forwards pass unrecorded.
        token_grids (tuple): ``(h, w)`` per level of the token sequences to split; empty:
            token sequences stay as they are (and give no map).
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], detach: bool = True,
                 to_cpu: bool = True) -> None:
        self.paths = list(dict.fromkeys(paths))  # a repeated path would record every call twice
        self.modules = [resolve_layer(model, p) for p in self.paths]
        self.detach = detach
        self.to_cpu = to_cpu
        self.enabled = True
        self.token_grids: Tuple[Tuple[int, int], ...] = ()
        self.token_paths: Set[str] = set()
        self.calls: 'OrderedDict[str, List[List[torch.Tensor]]]' = OrderedDict()
        self.output_types: Dict[str, str] = {}
        self._handles: list = []

    def clear(self) -> None:
        """Forgets everything recorded (before the next forward of a reused capture)."""
        self.calls.clear()
        self.output_types.clear()
        self.token_paths.clear()

    def _tensors(self, path: str, output) -> List[torch.Tensor]:
        """The tensors of one call's output, a token sequence split into its levels' maps."""
        tensors = flatten_output(output)
        if len(tensors) == 1:
            maps = split_tokens(tensors[0], self.token_grids)
            if maps is not None:
                self.token_paths.add(path)
                return maps
        return tensors

    def _record(self, path: str, output, tensors: List[torch.Tensor]) -> None:
        self.calls.setdefault(path, []).append(tensors)
        self.output_types.setdefault(path, describe_output(output))

    def _hook(self, path: str):
        def record(module, inputs, output):
            if not self.enabled:
                return
            tensors = self._tensors(path, output)
            if self.detach:
                tensors = [t.detach().clone() for t in tensors]
                if self.to_cpu:
                    tensors = [t.cpu() for t in tensors]
            self._record(path, output, tensors)
        return record

    def __enter__(self) -> 'ActivationCapture':
        self.clear()
        for path, module in zip(self.paths, self.modules):
            self._handles.append(module.register_forward_hook(self._hook(path)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def captured(self) -> List[Tuple[OutputSource, torch.Tensor]]:
        """Every recorded tensor with its :class:`OutputSource`, in the order of ``paths``,
        then calls, then elements."""
        result = []
        for path in self.paths:
            calls = self.calls.get(path, [])
            for call, tensors in enumerate(calls):
                for index, tensor in enumerate(tensors):
                    key = output_key(path, call, len(calls), index, len(tensors))
                    grids = tuple(self.token_grids) if path in self.token_paths else None
                    result.append((OutputSource(key, path, call, len(calls), index,
                                                len(tensors), grids), tensor))
        return result

    def missing_maps(self) -> Dict[str, str]:
        """After a forward: per path that gave no 4-D ``(N, C, H, W)`` map, why (it did not
        run, or what it returned instead); empty when every path gave at least one."""
        problems: Dict[str, str] = {}
        for path in self.paths:
            if path not in self.calls:
                problems[path] = 'did not run in the forward (a loss or training-only module?)'
            elif not any(t.dim() == 4 for tensors in self.calls[path] for t in tensors):
                problems[path] = (f'returned {self.output_types[path]}, not a 4-D (N, C, H, W) '
                                  f'tensor or a tuple/list of them')
        return problems

    def maps(self, batch_index: int = 0) -> 'OrderedDict[str, torch.Tensor]':
        """Per output key (:func:`output_key`), the CHW map of one batch item (4-D outputs
        only)."""
        return OrderedDict((source.key, tensor[batch_index])
                           for source, tensor in self.captured() if tensor.dim() == 4)


def describe_layers(model: nn.Module, input_shape: Tuple[int, int, int, int],
                    max_depth: Optional[int] = None) -> List[Tuple[str, int, str, int]]:
    """Layer preview: for every layer, (path, depth, output shapes, parameter count).

    Runs one forward of blank images of ``input_shape`` (``(N, C, H, W)``) through ``model``
    in eval mode without gradients: a detector the way MMDetection runs it, with data samples
    and its data preprocessor's padding (``core.dummy_forward``; the data preprocessor runs
    before recording starts, so it shows as not run), any other module on a zero tensor.
    Every submodule's mode is restored afterwards. A module that runs more than once shows
    every call: ``@0 1x96x8x8 | @1 1x96x4x4 | ...`` (the ``<layer>@<call>`` maps of
    :func:`output_key`).
    """
    calls: Dict[str, List[str]] = {}
    handles = []
    named = [(canonical_name(n), m) for n, m in model.named_modules() if n]
    with preserved_modes(model, training=False), torch.no_grad():
        forward = prepare_dummy_forward(model, input_shape)
        for name, module in named:
            def record(mod, inp, out, name=name):
                calls.setdefault(name, []).append(', '.join(
                    'x'.join(str(s) for s in t.shape) for t in flatten_output(out)) or '-')
            handles.append(module.register_forward_hook(record))
        try:
            forward()
        finally:
            for handle in handles:
                handle.remove()
    rows = []
    for name, module in named:
        depth = name.count('.') + name.count('[')
        if max_depth is not None and depth > max_depth:
            continue
        params = sum(p.numel() for p in module.parameters())
        default = 'container' if isinstance(module, (nn.ModuleList, nn.ModuleDict)) else 'not run'
        shapes = calls.get(name, [default])
        shown = shapes[0] if len(shapes) == 1 else ' | '.join(
            f'@{call} {shape}' for call, shape in enumerate(shapes))
        rows.append((name, depth, shown, params))
    return rows

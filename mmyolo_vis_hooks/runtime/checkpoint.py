"""Checkpoint loading that keeps ``torch.load(weights_only=True)``.

MMEngine checkpoints carry a few non-tensor objects (the message hub's ``HistoryBuffer`` and the
numpy arrays / scalars inside it). They are allow-listed here instead of unpickling arbitrary
code; running pickled code is only ever an explicit opt-in (``unsafe_load=True``).
"""
import os
import pickle
import re
import warnings
from typing import Any, List, Optional, Union

import numpy as np
import torch


class UnsafeCheckpointError(RuntimeError):
    """Raised when a checkpoint holds objects outside the allow-list."""


def _numpy_globals() -> List[Any]:
    multiarray = getattr(np, '_core', None) or np.core
    allowed: List[Any] = [multiarray.multiarray._reconstruct, multiarray.multiarray.scalar,
                          np.ndarray, np.dtype]
    # numpy >= 1.25 pickles dtypes as instances of per-type classes (np.dtypes.Float64DType...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]
    return allowed


# HistoryBuffer's default statistics; its ``__getstate__`` stores them as class attributes.
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling a checkpoint.

    MMEngine's ``HistoryBuffer`` pickles its statistics methods (protocol 2) as
    ``getattr(HistoryBuffer, 'mean')``. Allow-listing the real ``getattr`` would hand a pickle
    every attribute of every allowed object; this answers only those lookups.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint: only '
        f'getattr(HistoryBuffer, one of {_HISTORY_BUFFER_STATISTICS}) is')


def safe_globals() -> List[Any]:
    """The globals allowed in checkpoints loaded with ``weights_only=True``.

    Entries are objects or ``(stand-in, 'module.name')`` pairs, as
    ``torch.serialization.add_safe_globals`` takes them.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'), *_numpy_globals()]


def safe_global_names() -> List[str]:
    """The ``module.name`` strings of :func:`safe_globals` (as a pickle names them)."""
    return [g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
            for g in safe_globals()]


def register_safe_globals() -> None:
    """Adds :func:`safe_globals` to torch's allow-list (idempotent).

    Makes MMEngine's own ``torch.load`` calls (``Runner.resume``, ``load_from``) work under the
    ``weights_only=True`` default of torch >= 2.6 without lowering it.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(safe_globals())


def _plain(text: str) -> str:
    """``text`` without terminal escape codes (torch colours its unpickling errors)."""
    return re.sub(r'\x1b\[[0-9;]*m', '', text)


def load_checkpoint_file(path: str,
                         map_location: Optional[Union[str, torch.device]] = 'cpu',
                         unsafe_load: bool = False) -> Any:
    """Loads a checkpoint file with the safe unpickler.

    Args:
        path (str): Checkpoint path.
        map_location (str | torch.device, optional): Passed to ``torch.load``.
            Defaults to 'cpu'.
        unsafe_load (bool): Unpickle arbitrary objects (runs code from the file). Only for
            files you trust. Defaults to False.

    Raises:
        UnsafeCheckpointError: The file holds objects outside the allow-list.
    """
    if unsafe_load:
        warnings.warn(f'Loading {path} with weights_only=False: code inside the file runs.')
        return torch.load(path, map_location=map_location, weights_only=False)
    register_safe_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'Refusing to load {path}: it holds objects outside the allow-list of tensors, '
            f'numpy arrays and MMEngine log buffers ({_plain(str(err).splitlines()[0])}). If you '
            f'trust the file, pass --unsafe-load (tools) or unsafe_load=True (API).') from err


def state_dict_of(checkpoint: Any, source: str = 'the checkpoint') -> dict:
    """The ``state_dict`` of a loaded checkpoint (or the dict itself when it is one), with the
    ``module.`` prefix of DataParallel/DDP-wrapped models removed.

    Raises:
        ValueError: It holds no state dict.
    """
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{source} holds no state_dict; expected an MMEngine checkpoint or a '
                         f'state dict')
    return {key[len('module.'):] if key.startswith('module.') else key: value
            for key, value in state.items()}


def export_weights(checkpoint: str, out_file: str, half: bool = True,
                   extra_meta: Optional[dict] = None) -> str:
    """Writes a weights-only copy of an MMEngine checkpoint (no optimizer, no message hub).

    MMYOLO's EMAHook has already put the EMA weights into ``state_dict`` of the checkpoints it
    saves, so the export holds the weights that validation measured.

    Args:
        checkpoint (str): A checkpoint written by the Runner.
        out_file (str): Output path.
        half (bool): Store floating tensors as fp16 (half the size; ``load_state_dict`` copies
            them back into fp32 parameters). Defaults to True.
        extra_meta (dict, optional): Plain values added to ``meta`` (e.g. how it was trained).

    Returns:
        str: ``out_file``.
    """
    ckpt = load_checkpoint_file(checkpoint)
    weights = {}
    for key, value in state_dict_of(ckpt, checkpoint).items():
        if half and torch.is_floating_point(value):
            value = value.half()
        weights[key] = value.detach().clone().contiguous()
    dataset_meta = dict(ckpt.get('meta', {}).get('dataset_meta') or {})
    meta = dict(dataset_meta={k: dataset_meta[k] for k in ('classes', 'palette')
                              if k in dataset_meta})
    meta.update(extra_meta or {})
    out_dir = os.path.dirname(os.path.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    torch.save(dict(state_dict=weights, meta=meta), out_file)
    return out_file

"""Checkpoint loading that keeps ``torch.load(weights_only=True)``.

MMEngine checkpoints carry a few non-tensor objects (the message hub's ``HistoryBuffer`` and the
numpy arrays / scalars inside it). They are allow-listed here instead of unpickling arbitrary
code; running pickled code is only ever an explicit opt-in (``unsafe_load=True``).
"""
import pickle
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


def safe_globals() -> List[Any]:
    """The globals allowed in checkpoints loaded with ``weights_only=True``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, *_numpy_globals()]


def register_safe_globals() -> None:
    """Adds :func:`safe_globals` to torch's allow-list (idempotent).

    Makes MMEngine's own ``torch.load`` calls (``Runner.resume``, ``load_from``) work under the
    ``weights_only=True`` default of torch >= 2.6 without lowering it.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(safe_globals())


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
            f'numpy arrays and MMEngine log buffers ({str(err).splitlines()[0]}). If you trust '
            f'the file, pass --unsafe-load (tools) or unsafe_load=True (API).') from err

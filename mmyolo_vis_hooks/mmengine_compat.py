"""MMEngine internals the hooks need, read in ONE place.

MMEngine has no public way to reach these; if a release renames them, only this module changes
(``tests/test_mmengine_compat.py`` fails first). Checked against mmengine 0.10.x.
"""
from typing import Dict, Optional


def built_val_loop(runner):
    """The runner's validation loop as it stands: a built ``BaseLoop``, its config dict when
    not built yet, or None without validation. (The public ``runner.val_loop`` property
    builds the loop, and raises without a val config.)"""
    return runner._val_loop


def built_train_loop(runner):
    """The runner's training loop as it stands (built loop, config dict or None)."""
    return runner._train_loop


def vis_backends(visualizer) -> Dict[str, object]:
    """The Visualizer's backends by name (a copy), to write to each one separately: one
    failing backend must not stop the others (``Visualizer.add_image`` loops without
    isolating them)."""
    return dict(getattr(visualizer, '_vis_backends', {}) or {})


def local_image_dir(backend) -> Optional[str]:
    """Where a ``LocalVisBackend`` writes images (``<tag>_<step>.png``: a tag with ``/`` needs
    its sub-folder created first); None for other backends."""
    from mmengine.visualization import LocalVisBackend
    if not isinstance(backend, LocalVisBackend):
        return None
    return getattr(backend.experiment, '_img_save_dir', None)


def backend_save_dir(backend) -> str:
    """The folder a VisBackend writes to (``BaseVisBackend`` keeps it without an accessor)."""
    return backend._save_dir

"""The package: importing it registers every hook and backend into MMYOLO's registries and
extends torch's ``weights_only`` allow-list."""
import inspect

import numpy as np
import torch


def test_package_imports_registers_and_allow_lists():
    from mmengine.hooks import Hook
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.visualization.vis_backend import BaseVisBackend
    from mmyolo.registry import HOOKS, VISBACKENDS

    import mmyolo_vis_hooks
    from mmyolo_vis_hooks import backends, hooks
    from mmyolo_vis_hooks.runtime.checkpoint import safe_globals

    assert isinstance(mmyolo_vis_hooks.__version__, str) and mmyolo_vis_hooks.__version__
    allowed = torch.serialization.get_safe_globals()
    assert HistoryBuffer in allowed
    assert all(obj in allowed for obj in safe_globals())
    assert np.ndarray in allowed and np.dtype in allowed

    # every concrete hook / backend the package exports is registered into mmyolo's registries
    for module, base, registry in ((hooks, Hook, HOOKS), (backends, BaseVisBackend, VISBACKENDS)):
        for name in getattr(module, '__all__', []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) and issubclass(obj, base) and not name.startswith('Base')
                    and not inspect.isabstract(obj)):
                assert registry.get(name) is obj, f'{name} is not registered in mmyolo {registry}'


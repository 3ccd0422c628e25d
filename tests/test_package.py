"""The package: importing it registers every hook and backend into MMEngine's root registries
(found by bare name in the mmdet and mmyolo scopes) and extends torch's ``weights_only``
allow-list."""
import inspect

import numpy as np
import pytest
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

    # every concrete hook / backend the package exports is found through mmyolo's registries
    for module, base, registry in ((hooks, Hook, HOOKS), (backends, BaseVisBackend, VISBACKENDS)):
        for name in getattr(module, '__all__', []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) and issubclass(obj, base) and not name.startswith('Base')
                    and not inspect.isabstract(obj)):
                assert registry.get(name) is obj, f'{name} is not registered in mmyolo {registry}'



@pytest.mark.parametrize('scope', ['mmdet', 'mmyolo'])
def test_configs_of_either_scope_name_hooks_and_backends_bare(tmp_path, scope):
    """What a Runner does with ``custom_hooks`` and ``visualizer.vis_backends``: build by bare
    name under the config's default scope (a scope's registry falls back on MMEngine's root,
    where the package registers; not on a sibling scope's)."""
    from mmengine.registry import HOOKS, VISBACKENDS, DefaultScope

    from mmyolo_vis_hooks import backends, hooks
    with DefaultScope.overwrite_default_scope(scope):
        for name in ('FeatMapVisHook', 'BoxAMVisHook'):
            assert type(HOOKS.build(dict(type=name))) is getattr(hooks, name)
        backend = VISBACKENDS.build(dict(type='ActivationStatsVisBackend',
                                         save_dir=str(tmp_path)))
        assert type(backend) is backends.ActivationStatsVisBackend

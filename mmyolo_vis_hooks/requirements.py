"""Which MMYOLO the package runs on, checked at import with a message that says what to do.

Two distributions install the same ``mmyolo`` module: the official ``mmyolo`` 0.6.0, whose
import asserts mmcv < 2.1.0 (the usual GPU set-up with OpenMMLab's mmcv 2.0.x wheels), and
``mmyolo-open`` 0.6.1, the same code accepting mmcv 2.1.0 (what builds against recent torch).
The wheel requires neither, so installing it never adds a second distribution of the
``mmyolo`` module to a user's environment; without MMYOLO the package works on MMDetection's
configs alone.
"""
from importlib import metadata
from typing import List, Optional

MMYOLO_DISTRIBUTIONS = ('mmyolo', 'mmyolo-open')
INSTALL_HINT = ('install one of: `pip install mmyolo==0.6.0` (with mmcv>=2.0.0,<2.1.0, '
                'OpenMMLab\'s usual GPU set-up) or `pip install mmyolo-open==0.6.1` (the same '
                'code, for mmcv 2.1.0)')


def installed_mmyolo_distributions() -> List[str]:
    """The installed distributions that provide the ``mmyolo`` module, as ``name==version``."""
    found = []
    for name in MMYOLO_DISTRIBUTIONS:
        try:
            found.append(f'{name}=={metadata.version(name)}')
        except metadata.PackageNotFoundError:
            continue
    return found


def _version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def mmyolo_available() -> bool:
    """Whether MMYOLO can be used: True when it imports, False when it is not installed (the
    package then works with MMDetection alone).

    Raises:
        ImportError: MMYOLO is installed but its import refuses the installed mmcv/mmengine/
            mmdet; the message says what is installed and what works.
    """
    try:
        import mmyolo  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name != 'mmyolo':
            raise
        return False
    except AssertionError as err:  # mmyolo's own version asserts at import
        installed = ', '.join(installed_mmyolo_distributions()) or 'an mmyolo module'
        stack = ', '.join(f'{name}=={_version(name)}' for name in ('mmcv', 'mmengine', 'mmdet')
                          if _version(name))
        raise ImportError(f'{installed} cannot work with the installed {stack}: {err}. '
                          f'For mmcv 2.1.0 use mmyolo-open==0.6.1 instead of mmyolo; for '
                          f'mmyolo==0.6.0 use mmcv>=2.0.0,<2.1.0') from None
    return True


def check_mmyolo() -> bool:
    """Checks the OpenMMLab stack at import: a broken MMYOLO or an mmcv without compiled ops
    becomes an ImportError saying what is installed and what works. A missing MMYOLO is fine
    (MMDetection configs work without it).

    Returns:
        bool: Whether MMYOLO is available.

    Raises:
        ImportError: MMYOLO's import refuses the installed mmcv/mmengine/mmdet, or mmcv has no
            compiled ops.
    """
    available = mmyolo_available()
    try:
        import mmcv.ops  # noqa: F401  (mmdet's models import it; an mmcv without ops fails there)
    except ModuleNotFoundError as err:
        if not (err.name or '').startswith('mmcv.'):
            raise
        raise ImportError(f'the installed mmcv=={_version("mmcv")} has no compiled ops '
                          f'({err.name} is missing; mmcv-lite and MMCV_WITH_OPS=0 builds have '
                          f'none), and the detectors of MMDetection and MMYOLO need them: '
                          f'install a full mmcv (OpenMMLab\'s wheels for your torch/CUDA, or '
                          f'`pip install mmcv` which compiles them)') from None
    distributions = installed_mmyolo_distributions()
    if len(distributions) > 1:
        import warnings
        warnings.warn(f'{" and ".join(distributions)} are both installed and write the same '
                      f'`mmyolo` module; uninstall one of them', RuntimeWarning)
    return available

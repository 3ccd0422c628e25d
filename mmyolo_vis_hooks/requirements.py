"""Which MMYOLO the package runs on, checked at import with a message that says what to do.

Two distributions install the same ``mmyolo`` module: the official ``mmyolo`` 0.6.0, whose
import asserts mmcv < 2.1.0 (the usual GPU set-up with OpenMMLab's mmcv 2.0.x wheels), and
``mmyolo-open`` 0.6.1, the same code accepting mmcv 2.1.0 (what builds against recent torch).
The wheel requires neither, so installing it never adds a second distribution of the
``mmyolo`` module to a user's environment; without MMYOLO the package works on MMDetection's
configs alone.
"""
import sys
from importlib import metadata
from typing import Dict, List, Optional, Tuple

# What setup.cfg declares (python_requires and install_requires; tests/test_requirements.py keeps
# the two equal). Each lower bound is a version the tests ran on; docs/install.md says where.
PYTHON_REQUIRES = '>=3.11'
DECLARED_RANGES: Dict[str, str] = {
    'torch': '>=2.14.1',
    'mmcv': '>=2.0.1,<2.2.0',
    'mmengine': '>=0.10.7,<0.11',
    'mmdet': '>=3.3.0,<3.4',
}
# The official mmyolo 0.6.0 asserts mmcv < 2.1.0 at import.
OFFICIAL_MMYOLO_MMCV = f'{DECLARED_RANGES["mmcv"].split(",")[0]},<2.1.0'

MMYOLO_DISTRIBUTIONS = ('mmyolo', 'mmyolo-open')
INSTALL_HINT = (f'install one of: `pip install mmyolo==0.6.0` (with mmcv{OFFICIAL_MMYOLO_MMCV}, '
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


def _in_range(version: str, spec: str) -> bool:
    """Whether ``version`` satisfies ``spec``, a comma-separated list of ``>=X`` / ``<X``."""
    from mmengine.utils import digit_version
    for bound in spec.split(','):
        operator, limit = ('>=', bound[2:]) if bound.startswith('>=') else ('<', bound[1:])
        below = digit_version(version) < digit_version(limit)
        if below == (operator == '>='):
            return False
    return True


def versions_outside_declared_ranges(
        python_version: Optional[Tuple[int, int, int]] = None) -> List[str]:
    """The installed Python and dependencies whose versions lie outside what setup.cfg declares
    (possible after ``pip install --no-deps`` or a later downgrade), as ``name==version (declared
    spec)``.

    Args:
        python_version (tuple[int, int, int], optional): Defaults to the running interpreter's.
    """
    python = '.'.join(map(str, python_version or sys.version_info[:3]))
    outside = [] if _in_range(python, PYTHON_REQUIRES) else [
        f'python=={python} (declared {PYTHON_REQUIRES})']
    for name, spec in DECLARED_RANGES.items():
        version = _version(name)
        if version is not None and not _in_range(version, spec):
            outside.append(f'{name}=={version} (declared {spec})')
    return outside


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
                          f'mmyolo==0.6.0 use mmcv{OFFICIAL_MMYOLO_MMCV}') from None
    return True


def check_mmyolo() -> bool:
    """Checks the OpenMMLab stack at import: a broken MMYOLO or an mmcv without compiled ops
    becomes an ImportError saying what is installed and what works; versions outside the
    declared ranges, or two MMYOLO distributions, a RuntimeWarning. A missing MMYOLO is fine
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
    import warnings
    distributions = installed_mmyolo_distributions()
    if len(distributions) > 1:
        warnings.warn(f'{" and ".join(distributions)} are both installed and write the same '
                      f'`mmyolo` module; uninstall one of them', RuntimeWarning)
    outside = versions_outside_declared_ranges()
    if outside:
        warnings.warn(f'mmyolo_vis_hooks was not tested with {", ".join(outside)}; install '
                      f'versions in the declared ranges (`pip install mmyolo_vis_hooks` '
                      f'without --no-deps brings them)', RuntimeWarning)
    return available

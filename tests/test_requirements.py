"""check_mmyolo turns an unusable MMYOLO stack into one ImportError that says what to do; a missing
MMYOLO is fine.

The failures are simulated in this process: a module set to None in ``sys.modules`` cannot be
imported, and a meta-path finder raises what mmyolo's own version assert raises.
"""
import re
import sys

import pytest

from mmyolo_vis_hooks.requirements import (DECLARED_RANGES, OFFICIAL_MMYOLO_MMCV, PYTHON_REQUIRES,
                                         check_mmyolo, mmyolo_available,
                                         versions_outside_declared_ranges)


def test_installed_stack_passes():
    assert check_mmyolo() is True  # the project's own set-up: no exception, no warning needed


def test_missing_mmyolo_is_fine(monkeypatch):
    """Without MMYOLO the package works on MMDetection's configs: no error, and the check says
    MMYOLO is not available (tests/test_without_mmyolo.py runs the tools and a Runner so)."""
    monkeypatch.setitem(sys.modules, 'mmyolo', None)
    assert mmyolo_available() is False
    assert check_mmyolo() is False


class _RefusingFinder:
    """Stands for mmyolo 0.6.0's `assert mmcv_version < 2.1.0` at import."""

    def find_spec(self, name, path=None, target=None):
        if name == 'mmyolo':
            raise AssertionError('MMCV==2.1.0 is used but incompatible')
        return None


def test_mmyolo_refusing_mmcv_names_both_ways_out(monkeypatch):
    monkeypatch.delitem(sys.modules, 'mmyolo')
    monkeypatch.setattr(sys, 'meta_path', [_RefusingFinder(), *sys.meta_path])
    with pytest.raises(ImportError, match=r'cannot work with the installed mmcv==.*'
                                          r'incompatible.*mmyolo-open==0\.6\.1'):
        check_mmyolo()


def test_mmcv_without_ops_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmcv.ops', None)
    with pytest.raises(ImportError, match=r'has no compiled ops \(mmcv\.ops is missing.*'
                                          r'install a full mmcv'):
        check_mmyolo()


def test_other_missing_modules_are_not_hidden(monkeypatch):
    """Only mmyolo's and mmcv's own absence get the install message."""
    class _Missing:
        def find_spec(self, name, path=None, target=None):
            if name == 'mmyolo':
                raise ModuleNotFoundError("No module named 'prettytable'", name='prettytable')
            return None
    monkeypatch.delitem(sys.modules, 'mmyolo')
    monkeypatch.setattr(sys, 'meta_path', [_Missing(), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match='prettytable'):
        check_mmyolo()


def _declared_in_setup_cfg():
    """python_requires and the version specs of install_requires, from setup.cfg."""
    import configparser
    import os.path as osp

    from conftest import REPO_ROOT
    parser = configparser.ConfigParser()
    parser.read(osp.join(REPO_ROOT, 'setup.cfg'), encoding='utf-8')
    options = parser['options']
    specs = {}
    for line in options['install_requires'].splitlines():
        name, sep, spec = line.strip().partition('>=')
        if sep:
            specs[name] = set(f'>={spec}'.split(','))
    return options['python_requires'], specs


def test_runtime_check_declares_what_setup_cfg_declares():
    """The import-time check and the wheel's metadata name the same ranges."""
    python_requires, specs = _declared_in_setup_cfg()
    assert python_requires == PYTHON_REQUIRES
    assert {name: specs[name] for name in DECLARED_RANGES} == {
        name: set(spec.split(',')) for name, spec in DECLARED_RANGES.items()}
    assert OFFICIAL_MMYOLO_MMCV.startswith(DECLARED_RANGES['mmcv'].split(',')[0])


def test_installed_stack_is_inside_the_declared_ranges():
    assert versions_outside_declared_ranges() == []


@pytest.mark.parametrize('name, version, spec', [
    ('mmcv', '2.0.0', '>=2.0.1,<2.2.0'), ('mmcv', '2.2.0', '>=2.0.1,<2.2.0'),
    ('torch', '2.13.0+cpu', '>=2.14.1')])
def test_versions_outside_the_ranges_are_named_at_import(monkeypatch, name, version, spec):
    import mmyolo_vis_hooks.requirements as requirements
    real_version = requirements._version
    monkeypatch.setattr(requirements, '_version',
                        lambda dist: version if dist == name else real_version(dist))
    assert versions_outside_declared_ranges() == [f'{name}=={version} (declared {spec})']
    with pytest.warns(RuntimeWarning, match=re.escape(f'not tested with {name}=={version}')):
        check_mmyolo()


def test_an_older_python_is_named():
    assert versions_outside_declared_ranges((3, 10, 13)) == ['python==3.10.13 (declared >=3.11)']

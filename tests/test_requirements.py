"""check_mmyolo turns an unusable MMYOLO stack into one ImportError that says what to do; a missing
MMYOLO is fine.

The failures are simulated in this process: a module set to None in ``sys.modules`` cannot be
imported, and a meta-path finder raises what mmyolo's own version assert raises.
"""
import sys

import pytest

from mmyolo_vis_hooks.requirements import check_mmyolo, mmyolo_available


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

"""Argument checks (engine/core/checks.py): one rule, a wrong type raises ``TypeError`` and a
right type with a wrong value raises ``ValueError``; messages say what was given and what is
accepted; ``owned_by`` puts the owner in front, keeping the type."""
import numpy as np
import pytest

from mmyolo_vis_hooks.engine.core.checks import (check_bool, check_choice, check_int,
                                                 check_int_list, check_number, check_str_list,
                                                 owned_by)


def test_check_bool_accepts_only_bools():
    assert check_bool('strict', True) is True
    assert check_bool('strict', False) is False
    for value in (1, 0, 'yes', None, np.bool_(True)):
        with pytest.raises(TypeError, match=r'strict must be a bool \(True or False\), got'):
            check_bool('strict', value)


def test_check_int_type_then_range():
    assert check_int('interval', 3, low=1) == 3
    assert type(check_int('n', np.int64(7))) is int  # numpy ints are ints, returned as int
    with pytest.raises(TypeError, match=r"interval must be a positive int, got 1\.5 \(float\)"):
        check_int('interval', 1.5, low=1)
    with pytest.raises(TypeError, match=r'got True \(bool\)'):  # bool is not an int here
        check_int('interval', True, low=1)
    with pytest.raises(TypeError, match=r"got '3' \(str\)"):
        check_int('topk', '3')
    with pytest.raises(ValueError, match=r'interval must be a positive int, got 0$'):
        check_int('interval', 0, low=1)
    with pytest.raises(ValueError, match=r'seed must be an int >= 0, got -1$'):
        check_int('seed', -1, low=0)
    with pytest.raises(ValueError, match=r'level must be an int in \[0, 4\], got 5$'):
        check_int('level', 5, low=0, high=4)
    with pytest.raises(ValueError, match=r'x must be an int <= 2, got 3$'):
        check_int('x', 3, high=2)
    with pytest.raises(ValueError, match=r'size must be an int >= 32, got 31$'):
        check_int('size', 31, low=32)
    with pytest.raises(ValueError, match=r'k must be -1 or more, got -2$'):
        check_int('k', -2, low=-1, accepted='-1 or more')


def test_check_number_intervals_open_and_closed():
    assert check_number('alpha', 0, 0, 1) == 0.0 and check_number('alpha', 1, 0, 1) == 1.0
    assert isinstance(check_number('alpha', 1, 0, 1), float)
    with pytest.raises(ValueError, match=r'alpha must be a number in \[0, 1\], got 1\.5$'):
        check_number('alpha', 1.5, 0, 1)
    with pytest.raises(ValueError, match=r'ratio must be a number in \(0, 1\], got 0$'):
        check_number('ratio', 0, 0, 1, low_open=True)
    assert check_number('ratio', 1e-9, 0, 1, low_open=True) == 1e-9
    with pytest.raises(ValueError, match=r'overlap must be a number in \[0, 1\), got 1\.0$'):
        check_number('overlap', 1.0, 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r'eps must be a number > 0, got 0'):
        check_number('eps', 0, low=0, low_open=True)
    with pytest.raises(ValueError, match=r'cap must be a number <= 2, got 3'):
        check_number('cap', 3, high=2)
    with pytest.raises(ValueError, match='got nan'):  # NaN is inside no interval
        check_number('alpha', float('nan'), 0, 1)
    with pytest.raises(ValueError, match='got nan'):
        check_number('anything', float('nan'))
    for value in ('0.5', None, False, [0.5]):
        with pytest.raises(TypeError, match=r'alpha must be a number in \[0, 1\], got'):
            check_number('alpha', value, 0, 1)


def test_check_choice():
    assert check_choice('align', 'resize', ('letterbox', 'resize')) == 'resize'
    with pytest.raises(ValueError,
                       match=r"align must be one of 'letterbox', 'resize', got 'Resize'$"):
        check_choice('align', 'Resize', ('letterbox', 'resize'))  # compared exactly
    with pytest.raises(TypeError, match=r"align must be one of 'letterbox', 'resize', got 1 "
                       r'\(int\)'):
        check_choice('align', 1, ('letterbox', 'resize'))


def test_check_str_list():
    assert check_str_list('layers', ('neck', 'backbone')) == ['neck', 'backbone']
    assert check_str_list('layers', 'neck') == ['neck']  # a single string is a list of one
    with pytest.raises(TypeError, match=r'layers must be a list of strings, e\.g\. x, got'):
        check_str_list('layers', 'neck', example='x', allow_single=False)
    with pytest.raises(ValueError, match=r'layers must name at least one item, got an empty'):
        check_str_list('layers', [])
    with pytest.raises(TypeError, match=r'layers must hold strings, got 3 \(int\)'):
        check_str_list('layers', ['neck', 3])
    with pytest.raises(ValueError, match=r"layers must hold non-empty strings, got '  '"):
        check_str_list('layers', ['neck', '  '])
    with pytest.raises(TypeError, match='layers must be a list of strings'):
        check_str_list('layers', {'neck': 1})  # a dict is no sequence
    with pytest.raises(TypeError):
        check_str_list('layers', b'neck')


def test_check_int_list_names_the_bad_item():
    assert check_int_list('img_indices', (0, 3, 3)) == [0, 3, 3]
    with pytest.raises(ValueError, match=r'img_indices\[1\] must be an int >= 0, got -1$'):
        check_int_list('img_indices', [2, -1], low=0)
    with pytest.raises(TypeError, match=r"img_indices\[0\] must be an int, got '0' \(str\)"):
        check_int_list('img_indices', ['0'])
    with pytest.raises(TypeError, match=r"img_indices must be a list of ints, got '0' \(str\)"):
        check_int_list('img_indices', '0')
    with pytest.raises(ValueError, match='img_indices must be a non-empty list of ints'):
        check_int_list('img_indices', [])


def test_owned_by_prefixes_and_keeps_the_type():
    with pytest.raises(ValueError) as err:
        with owned_by('FeatMapVisHook'):
            check_int('interval', 0, low=1)
    assert str(err.value) == 'FeatMapVisHook: interval must be a positive int, got 0'
    assert type(err.value) is ValueError
    with pytest.raises(TypeError) as err:
        with owned_by('BoxAMVisHook'):
            check_bool('merge', 'yes')
    assert str(err.value).startswith('BoxAMVisHook: merge must be a bool')
    # nested owners do not repeat the prefix
    with pytest.raises(ValueError) as err:
        with owned_by('Hook'):
            with owned_by('Hook'):
                raise ValueError('bad')
    assert str(err.value) == 'Hook: bad'
    # other errors pass through untouched; no error, no effect
    with pytest.raises(KeyError):
        with owned_by('Hook'):
            raise KeyError('k')
    with owned_by('Hook'):
        value = check_int('n', 2)
    assert value == 2

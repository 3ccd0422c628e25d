"""Argument checks shared by the hooks, the engines and the tools. One rule: a value of the
wrong type raises ``TypeError``, a value of the right type outside what is accepted raises
``ValueError``; both say what was given and what is accepted.

Hooks name themselves in front of the message with :func:`owned_by`.
"""
import numbers
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence


def _describe(value: Any) -> str:
    return f'{value!r} ({type(value).__name__})'


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be a bool (True or False), got {_describe(value)}')
    return value


def check_int(name: str, value: Any, low: Optional[int] = None,
              high: Optional[int] = None, accepted: str = '') -> int:
    """An int (not a bool) in ``[low, high]`` (either bound optional)."""
    wanted = accepted or _range_text('an int', low, high)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{name} must be {wanted}, got {_describe(value)}')
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f'{name} must be {wanted}, got {value!r}')
    return int(value)


def check_number(name: str, value: Any, low: Optional[float] = None,
                 high: Optional[float] = None, low_open: bool = False,
                 high_open: bool = False, accepted: str = '') -> float:
    """A real number (not a bool) in the interval given by ``low``/``high`` (closed unless
    ``low_open``/``high_open``)."""
    wanted = accepted or _interval_text(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be {wanted}, got {_describe(value)}')
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or value != value:  # NaN
        raise ValueError(f'{name} must be {wanted}, got {value!r}')
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices`` (strings, compared exactly)."""
    if not isinstance(value, str):
        raise TypeError(f'{name} must be one of {", ".join(map(repr, choices))}, got '
                        f'{_describe(value)}')
    if value not in choices:
        raise ValueError(f'{name} must be one of {", ".join(map(repr, choices))}, got '
                         f'{value!r}')
    return value


def check_str_list(name: str, value: Any, example: str = '',
                   allow_single: bool = True) -> List[str]:
    """A non-empty list/tuple of non-empty strings (a single string counts as a list of one
    when ``allow_single``)."""
    hint = f', e.g. {example}' if example else ''
    if allow_single and isinstance(value, str):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f'{name} must be a list of strings{hint}, got {_describe(value)}')
    if not value:
        raise ValueError(f'{name} must name at least one item{hint}, got an empty list')
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f'{name} must hold strings{hint}, got {_describe(item)}')
        if not item.strip():
            raise ValueError(f'{name} must hold non-empty strings{hint}, got {item!r}')
    return list(value)


def check_int_list(name: str, value: Any, low: Optional[int] = None) -> List[int]:
    """A non-empty list/tuple of ints (each at least ``low`` when given)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f'{name} must be a list of ints, got {_describe(value)}')
    if not value:
        raise ValueError(f'{name} must be a non-empty list of ints, got an empty list')
    return [check_int(f'{name}[{i}]', v, low) for i, v in enumerate(value)]


@contextmanager
def owned_by(owner: str) -> Iterator[None]:
    """Re-raises a ``TypeError``/``ValueError`` of the block with ``owner: `` in front of its
    message (same type), so a hook's errors say which hook refused what."""
    try:
        yield
    except (TypeError, ValueError) as err:
        message = str(err)
        if message.startswith(f'{owner}:'):
            raise
        raise type(err)(f'{owner}: {message}') from None


def _range_text(kind: str, low: Optional[int], high: Optional[int]) -> str:
    if low is not None and high is not None:
        return f'{kind} in [{low}, {high}]'
    if low is not None:
        return {0: f'{kind} >= 0', 1: f'a positive {kind[3:] if kind.startswith("an ") else kind}'
                }.get(low, f'{kind} >= {low}')
    if high is not None:
        return f'{kind} <= {high}'
    return kind


def _interval_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return 'a number'
    if high is None:
        return f'a number {">" if low_open else ">="} {low}'
    if low is None:
        return f'a number {"<" if high_open else "<="} {high}'
    return f'a number in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'

"""Channel reduction of a CHW feature map, with the semantics of mmengine's ``draw_featmap``.

- ``'squeeze_mean'``: the mean over channels.
- ``'select_max'``: the channel whose spatial SUM is largest.
- ``None`` with ``topk > 0``: the ``topk`` channels with the largest spatial sums, laid out by
  ``arrangement`` (rows, cols); ``None`` with ``topk <= 0``: the map itself, which must have 1
  channel (a heat map) or 3 channels (shown as an image).
"""
from typing import List, Optional, Sequence, Tuple

import torch

from ..core.checks import check_int

CHANNEL_REDUCTIONS = ('squeeze_mean', 'select_max', None)


def check_reduction(channel_reduction: Optional[str], topk: int,
                    arrangement: Sequence[int]) -> None:
    """Raises ValueError for arguments ``reduce_channels`` would reject, before any work."""
    if channel_reduction not in CHANNEL_REDUCTIONS:
        raise ValueError(f'channel_reduction must be one of {CHANNEL_REDUCTIONS}, '
                         f'got {channel_reduction!r}')
    check_int('topk', topk, accepted='a positive int or -1 (no top-k)')
    if topk == 0 or topk < -1:
        raise ValueError(f'topk must be a positive int or -1 (no top-k), got {topk!r}')
    if not isinstance(arrangement, (tuple, list)):
        raise TypeError(f'arrangement must be (rows, cols) of positive ints, got '
                        f'{arrangement!r}')
    if len(arrangement) != 2:
        raise ValueError(f'arrangement must be (rows, cols) of positive ints, got '
                         f'{arrangement!r}')
    for value in arrangement:
        check_int('arrangement', value, low=1, accepted='(rows, cols) of positive ints')
    if channel_reduction is None and topk > 0 and arrangement[0] * arrangement[1] < topk:
        raise ValueError(f'arrangement {tuple(arrangement)} has {arrangement[0] * arrangement[1]}'
                         f' cells, fewer than topk={topk}; use rows * cols >= topk')


def reduce_channels(featmap: torch.Tensor, channel_reduction: Optional[str] = 'squeeze_mean',
                    topk: int = 20) -> List[Tuple[str, torch.Tensor]]:
    """Reduces a ``(C, H, W)`` map to a list of ``(label, map)``.

    Each map is ``(H, W)``, or ``(3, H, W)`` for a 3-channel map shown as an image.

    Raises:
        ValueError: Not a 3-D map, or ``topk <= 0`` with no reduction on a map whose channel
            count is not 1 or 3.
    """
    if featmap.dim() != 3:
        raise ValueError(f'expected a (C, H, W) feature map, got shape {tuple(featmap.shape)}')
    featmap = featmap.float()
    channels = featmap.shape[0]
    if channel_reduction == 'squeeze_mean':
        return [('mean', featmap.mean(dim=0))]
    if channel_reduction == 'select_max':
        index = int(torch.argmax(featmap.sum(dim=(1, 2))))
        return [(f'channel: {index}', featmap[index])]
    if topk > 0:
        k = min(topk, channels)
        indices = torch.topk(featmap.sum(dim=(1, 2)), k).indices.tolist()
        return [(f'channel: {i}', featmap[i]) for i in indices]
    if channels == 1:
        return [('', featmap[0])]
    if channels == 3:
        return [('', featmap)]
    raise ValueError(
        f'the map has {channels} channels; with channel_reduction=None and topk <= 0 only 1 or '
        f'3 channels can be shown. Set channel_reduction to "squeeze_mean" or "select_max", or '
        f'topk > 0.')

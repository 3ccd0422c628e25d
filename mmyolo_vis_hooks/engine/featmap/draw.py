"""Drawing one layer's feature map over its image: reduction, alignment, boxes, grid."""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.draw import draw_boxes, make_grid, overlay
from ..core.geometry import map_to_original, original_size, scale_boxes
from .capture import CapturedSample
from .reduce import reduce_channels


def draw_layer(image: np.ndarray, featmap: torch.Tensor, sample: CapturedSample,
                 channel_reduction: Optional[str], topk: int, arrangement: Tuple[int, int],
                 alpha: float, align: bool = True, score_thr: Optional[float] = 0.3,
                 class_names: Sequence[str] = ()) -> np.ndarray:
    """Draws one layer's map(s) over ``image`` (already sized for display).

    Args:
        image (np.ndarray): RGB original image, possibly scaled down for display.
        featmap (Tensor): The layer's CHW map over the network input.
        sample (CapturedSample): Metadata and predictions of the image.
        channel_reduction, topk, arrangement: See ``engine.featmap.reduce``.
        alpha (float): Heat opacity.
        align (bool): Trace the letterbox/resize geometry back (True) or stretch the map over
            the image (False, what naive tools do). Defaults to True.
        score_thr (float, optional): Draw predicted boxes above this score; None draws none.
        class_names (Sequence[str]): Names for box captions.

    Returns:
        np.ndarray: RGB image; a grid of ``arrangement`` when several channels are shown.

    Raises:
        ValueError: The map has no pixels.
    """
    if featmap.dim() != 3 or featmap.shape[-1] == 0 or featmap.shape[-2] == 0:
        raise ValueError(f'empty feature map of shape {tuple(featmap.shape)}')
    height, width = image.shape[:2]
    ori_h, ori_w = original_size(sample.meta)
    tiles, titles = [], []
    for label, reduced in reduce_channels(featmap, channel_reduction, topk):
        if align:
            heat = map_to_original(reduced, sample.meta, out_size=(height, width))
        else:
            heat = torch.nn.functional.interpolate(
                (reduced if reduced.dim() == 3 else reduced[None])[None].float(),
                size=(height, width), mode='bilinear', align_corners=False)[0]
            heat = heat[0] if reduced.dim() == 2 else heat
        tile = overlay(image, heat, alpha)
        if score_thr is not None and len(sample.scores):
            keep = sample.scores >= score_thr
            boxes = scale_boxes(torch.as_tensor(sample.boxes[keep]), width / ori_w,
                                height / ori_h).numpy()
            tile = draw_boxes(tile, boxes, sample.labels[keep], sample.scores[keep],
                              class_names)
        tiles.append(tile)
        titles.append(label)
    if len(tiles) == 1:
        return tiles[0]
    return make_grid(tiles, titles, ncols=arrangement[1])

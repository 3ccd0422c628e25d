"""Drawing (engine/core/draw.py): normalisation, heat overlays, box drawing, grids, display
size and the RGB conversion, on small hand-made arrays."""
import numpy as np
import pytest
import torch

from mmyolo_vis_hooks.engine.core.draw import (check_alpha, display_image, draw_boxes,
                                                 fit_size, make_grid, normalize_map, overlay,
                                                 resize_image, to_rgb)


def test_normalize_map_min_max_flat_and_non_finite():
    out = normalize_map(torch.tensor([[1., 3.], [5., 9.]]))
    assert out.dtype == np.float32 and out.tolist() == [[0, 0.25], [0.5, 1]]
    assert normalize_map(torch.full((2, 3), 7.)).tolist() == [[0] * 3] * 2  # flat: zeros
    # A constant sampled onto the image differs from itself by float32 rounding only: flat,
    # not noise blown up to [0, 1]; a real spread of 1e-4 of the value is kept.
    rounded = torch.tensor([-1.8045, -1.8045], dtype=torch.float64) * torch.tensor([1, 1 + 2e-7])
    assert rounded.float()[0] != rounded.float()[1]
    assert normalize_map(rounded.float()).tolist() == [0, 0]
    assert normalize_map(torch.tensor([-1.8045, -1.8045 * (1 + 1e-4)])).tolist() == [1, 0]
    # NaN and +-Inf become 0 before the min-max
    odd = normalize_map(torch.tensor([[float('nan'), 2.], [float('inf'), 4.]]))
    assert odd.tolist() == [[0, 0.5], [0, 1]]
    assert normalize_map(torch.tensor([-2., 2.], dtype=torch.float16)).tolist() == [0, 1]


def test_overlay_blends_by_alpha():
    image = np.full((2, 2, 3), 100, np.uint8)
    heat = torch.tensor([[[0., 1.], [1., 0.]], [[1., 1.], [0., 0.]], [[0., 0.], [0., 1.]]])
    colour = np.array([[[0, 255, 0], [255, 255, 0]], [[255, 0, 0], [0, 0, 255]]], np.uint8)
    # a (3, H, W) map is shown as an RGB image: channel c normalised to [0, 255]
    assert (overlay(image, heat, alpha=1.0) == colour).all()
    assert (overlay(image, heat, alpha=0.0) == image).all()
    half = overlay(image, heat, alpha=0.5).astype(int)
    assert (np.abs(half - (0.5 * image + 0.5 * colour)) <= 1).all()
    with pytest.raises(ValueError, match=r'map size \(2, 2\) differs from image size \(3, 2\)'):
        overlay(np.zeros((3, 2, 3), np.uint8), heat)


def test_overlay_of_a_heat_map_uses_jet():
    image = np.zeros((1, 2, 3), np.uint8)
    out = overlay(image, torch.tensor([[0., 1.]]), alpha=1.0)
    low, high = out[0, 0].astype(int), out[0, 1].astype(int)  # RGB
    assert low[2] > 100 and low[0] == 0   # the minimum is blue
    assert high[0] > 100 and high[2] == 0  # the maximum is red


def test_check_alpha():
    assert check_alpha(0.3) == 0.3 and check_alpha(1) == 1.0
    with pytest.raises(ValueError, match=r'alpha must be a number in \[0, 1\], got 1\.5'):
        check_alpha(1.5)
    with pytest.raises(TypeError, match='alpha must be a number'):
        check_alpha('0.5')


@pytest.mark.parametrize('size, max_size, expected', [
    ((100, 200), 50, (25, 50)),
    ((100, 200), None, (100, 200)),
    ((100, 200), 0, (100, 200)),      # 0 / None: unchanged
    ((100, 200), 300, (100, 200)),    # already small enough
    ((3, 1000), 100, (1, 100)),       # never below one pixel (0.3 -> 1)
    ((333, 100), 100, (100, 30)),
])
def test_fit_size(size, max_size, expected):
    assert fit_size(*size, max_size) == expected


def test_display_image_and_resize_image():
    image = np.zeros((100, 200, 3), np.uint8)
    assert display_image(image, 50).shape == (25, 50, 3)
    assert display_image(image, None) is image
    assert resize_image(image, (100, 200)) is image
    assert resize_image(image, (10, 20)).shape == (10, 20, 3)


def test_draw_boxes_colours_lines_and_captions_on_a_copy():
    image = np.zeros((100, 200, 3), np.uint8)
    out = draw_boxes(image, np.array([[10, 40, 50, 70]]), [0], [0.5], ['circle'],
                     color=(255, 0, 0), captions=False)
    assert not image.any()  # the input is left alone
    assert out[40, 30].tolist() == [255, 0, 0] and out[70, 30].tolist() == [255, 0, 0]
    assert out[55, 10].tolist() == [255, 0, 0] and out[55, 50].tolist() == [255, 0, 0]
    assert not out[55, 30].any() and not out[38, 11].any()  # inside, above: untouched
    # 200 px long side: 1 px lines (1 per 400 px, at least 1)
    assert not out[41, 30].any()
    # a palette colours by class; the caption bar sits above the box in the box colour
    palette = [(1, 2, 3), (0, 255, 0)]
    captioned = draw_boxes(image, [[10, 40, 50, 70]], [1], [0.9], ['a', 'b'], palette=palette)
    assert captioned[40, 30].tolist() == [0, 255, 0]
    assert captioned[38, 11].tolist() == [0, 255, 0]
    # a box at the top edge puts its caption below the box
    top = draw_boxes(image, [[10, 0, 50, 30]], [0], [0.9], ['a'], color=(255, 0, 0))
    assert top[32, 11].tolist() == [255, 0, 0] and not top[25, 30].any()


def test_make_grid_layout_padding_and_titles():
    tiles = [np.full((10, 20, 3), v, np.uint8) for v in (10, 20)] + [np.full((6, 8, 3), 30,
                                                                             np.uint8)]
    grid = make_grid(tiles)  # ceil(sqrt(3)) = 2 columns, 2 rows, 4 px white gaps
    assert grid.shape == (2 * 10 + 4, 2 * 20 + 4, 3)
    assert (grid[:10, :20] == 10).all() and (grid[:10, 24:44] == 20).all()
    assert (grid[14:20, 0:8] == 30).all() and (grid[20:24, 0:20] == 255).all()  # padded
    assert (grid[:, 20:24] == 255).all() and (grid[14:, 24:] == 255).all()  # gap, empty cell
    titled = make_grid(tiles, titles=['a', 'b', 'c'], ncols=3, gap=2)
    assert titled.shape == (16 + 10, 3 * 20 + 2 * 2, 3)  # one row, 16 px title bars
    assert (titled[16:, :20] == 10).all() and (titled[:16, :20] < 255).any()  # text drawn
    with pytest.raises(ValueError, match='at least one tile'):
        make_grid([])


def test_to_rgb_grey_rgba_and_rgb():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    rgb = to_rgb(grey)
    assert rgb.shape == (2, 3, 3) and all((rgb[..., c] == grey).all() for c in range(3))
    assert (to_rgb(grey[..., None]) == rgb).all()
    rgba = np.dstack([rgb, np.full((2, 3), 9, np.uint8)])
    assert (to_rgb(rgba) == rgb).all()  # alpha dropped, not composited
    assert to_rgb(rgb) is rgb

"""The slice grid (engine/slicing/grid.py): sahi's windows, covering the image."""
import numpy as np

from mmyolo_vis_hooks.engine.slicing import slice_windows


def test_grid_is_sahis_and_covers_the_image():
    from sahi.slicing import slice_image
    windows = slice_windows(2000, 3000, 320, 0.25)
    assert len(windows) == 104  # the embedded image's slice count (ENVIRONMENT.md pitfall 10)
    img = np.zeros((2000, 3000, 3), np.uint8)
    sahi_windows = slice_image(img, slice_height=320, slice_width=320, overlap_height_ratio=0.25,
                               overlap_width_ratio=0.25).starting_pixels
    assert [list(w[:2]) for w in windows] == [list(p) for p in sahi_windows]
    assert (windows[:, 2] - windows[:, 0] == 320).all() and windows[:, 2].max() == 3000
    # a patch larger than the image: one window, the image itself
    assert slice_windows(150, 200, 320, 0.25).tolist() == [[0, 0, 200, 150]]
    # larger than the image in one direction only (non-square image)
    tall = slice_windows(1000, 200, 320, 0.25)
    assert (tall[:, 0] == 0).all() and (tall[:, 2] == 200).all() and tall[-1, 3] == 1000

"""Image files (runtime/images.py): listing a tool's inputs (file, folder, .txt list), the one
reader (grey, RGB, RGBA, 16-bit; missing and corrupt files) and writing RGB pictures."""
import os.path as osp

import cv2
import numpy as np
import pytest

from mmyolo_vis_hooks.runtime.images import (list_images, read_image, read_rgb, write_rgb,
                                             write_stored_png)


def _write(path, pixels):
    assert cv2.imwrite(str(path), pixels)
    return str(path)


def test_list_a_folder_recursively_sorted_images_only(tmp_path):
    (tmp_path / 'sub').mkdir()
    for rel in ('b.png', 'a.JPG', 'sub/c.tiff', 'notes.txt', 'sub/d.gif'):
        (tmp_path / rel).write_bytes(b'x')
    assert list_images(str(tmp_path)) == [str(tmp_path / 'a.JPG'), str(tmp_path / 'b.png'),
                                          str(tmp_path / 'sub' / 'c.tiff')]
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match=r'no images \(\.jpg, \.jpeg, \.png.*\) found in '):
        list_images(str(tmp_path / 'empty'))


def test_list_a_file_or_a_text_list(tmp_path):
    image = str(tmp_path / 'one.webp')
    (tmp_path / 'one.webp').write_bytes(b'x')
    assert list_images(image) == [image]
    (tmp_path / 'lists').mkdir()
    (tmp_path / 'lists' / 'inputs.txt').write_text(f'\n  ../one.webp \n\n{image}\nrel/x.png\n')
    assert list_images(str(tmp_path / 'lists' / 'inputs.txt')) == [
        osp.join(str(tmp_path / 'lists'), '../one.webp'), image,
        osp.join(str(tmp_path / 'lists'), 'rel/x.png')]  # relative to the list's folder
    (tmp_path / 'blank.txt').write_text('\n \n')
    with pytest.raises(ValueError, match='the image list .*blank.txt is empty'):
        list_images(str(tmp_path / 'blank.txt'))
    (tmp_path / 'clip.gif').write_bytes(b'x')
    with pytest.raises(ValueError, match=r'unsupported image file .*clip\.gif; expected one of '
                       r'\.jpg, .*a folder, or a \.txt list of paths'):
        list_images(str(tmp_path / 'clip.gif'))
    with pytest.raises(FileNotFoundError, match='image, folder or list not found: .*nope'):
        list_images(str(tmp_path / 'nope'))


def test_read_rgb_grey_rgba(tmp_path):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # blue, green, red
    colour = read_image(_write(tmp_path / 'c.png', bgr))
    assert colour.dtype == np.uint8 and colour[0, 0].tolist() == [30, 20, 10]  # RGB
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert read_image(_write(tmp_path / 'g.png', grey)).shape == (2, 3)  # as it is
    assert (read_rgb(str(tmp_path / 'g.png')) == grey[..., None]).all()
    assert read_rgb(str(tmp_path / 'g.png')).shape == (2, 3, 3)
    bgra = np.dstack([bgr, np.full((2, 3), 40, np.uint8)])
    assert read_image(_write(tmp_path / 'a.png', bgra))[0, 0].tolist() == [30, 20, 10, 40]
    rgb = read_rgb(str(tmp_path / 'a.png'))
    assert rgb.shape == (2, 3, 3) and rgb[1, 2].tolist() == [30, 20, 10]
    assert rgb.flags['C_CONTIGUOUS']


def test_read_16_bit_scales_to_8(tmp_path):
    grey16 = np.full((2, 2), 0x1234, np.uint16)
    assert read_image(_write(tmp_path / 'g16.png', grey16)).tolist() == [[0x12] * 2] * 2
    bgr16 = np.zeros((1, 1, 3), np.uint16)
    bgr16[0, 0] = (0xFFFF, 0x0100, 0x00FF)
    img = read_rgb(_write(tmp_path / 'c16.png', bgr16))
    assert img.dtype == np.uint8 and img[0, 0].tolist() == [0, 1, 255]


def test_read_refuses_missing_corrupt_and_float_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='image not found: .*missing.png'):
        read_image(str(tmp_path / 'missing.png'))
    good = _write(tmp_path / 'good.png', np.zeros((8, 8, 3), np.uint8))
    data = open(good, 'rb').read()
    (tmp_path / 'bad.png').write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match=r'cannot decode image .*bad\.png \(corrupt'):
        read_image(str(tmp_path / 'bad.png'))
    _write(tmp_path / 'f.tiff', np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match=r'unsupported pixel type float32 .*8- or 16-bit'):
        read_image(str(tmp_path / 'f.tiff'))


@pytest.mark.parametrize('channels', [None, 1, 2, 3, 4])
def test_stored_png_is_a_valid_png_of_the_same_pixels(tmp_path, channels):
    """Grey, grey+alpha, RGB, RGBA; several row bands with a partial last one; read back by
    OpenCV and Pillow (whose verify() checks every chunk's CRC)."""
    from PIL import Image
    shape = (130, 37) if channels is None else (130, 37, channels)
    pixels = np.random.default_rng(channels or 0).integers(0, 256, shape, dtype=np.uint8)
    path = str(tmp_path / 'p.png')
    write_stored_png(path, pixels, rows_per_chunk=64)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), pixels.reshape(shape[:2]) if channels == 1
                              else pixels)
    expected = pixels[..., 0] if channels == 1 else pixels
    if channels == 2:  # OpenCV reads grey+alpha as RGBA
        expected = pixels[..., [0, 0, 0, 1]]
    assert np.array_equal(read_image(path), expected)  # RGB(A) order, as written


def test_stored_png_refuses_what_png_cannot_hold(tmp_path):
    for bad in (np.zeros((4, 4), np.uint16), np.zeros((4, 4, 5), np.uint8),
                np.zeros((2, 4, 4, 3), np.uint8)):
        with pytest.raises(ValueError, match=r'expected uint8 pixels \(H, W\) or \(H, W, 1-4\)'):
            write_stored_png(str(tmp_path / 'x.png'), bad)
    assert not (tmp_path / 'x.png').exists()


def test_write_rgb_round_trip_and_compression(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[10:20, 10:20, 2] = 50
    stored = str(tmp_path / 'new' / 'dir' / 'stored.png')
    write_rgb(stored, rgb, png_compression=0)  # folders created
    packed = str(tmp_path / 'packed.png')
    write_rgb(packed, rgb, png_compression=9)
    assert (read_rgb(stored) == rgb).all() and (read_rgb(packed) == rgb).all()
    assert cv2.imread(packed)[0, 0].tolist() == [0, 0, 200]  # BGR on disk
    assert osp.getsize(stored) > 64 * 64 * 3 > osp.getsize(packed)
    write_rgb(str(tmp_path / 'pic.jpg'), rgb)
    assert np.abs(read_rgb(str(tmp_path / 'pic.jpg')).astype(int) - rgb).max() < 40

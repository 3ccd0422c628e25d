"""TIFFs read window by window (runtime.tiff): the pixels of every layout, never the whole
image at once, GeoTIFF coordinates, the missing-package message; and the large-image tool on
TIFFs: the same detections as on the same pixels as PNG, slices counted per image, overview
pictures for huge images, boxes in map coordinates."""
import json
import sys

import cv2
import numpy as np
import pytest

from helpers import DEMO_CONFIG
from mmyolo_vis_hooks.cli import large_image_infer as tool
from mmyolo_vis_hooks.engine.slicing import read_window, slice_windows
from mmyolo_vis_hooks.engine.slicing import grid
from mmyolo_vis_hooks.runtime import images, large_image
from mmyolo_vis_hooks.runtime.tiff import GeoReference, MissingPackageError, TiffImage
from helpers.slicing import LOW_THR

tifffile = pytest.importorskip('tifffile')

HEIGHT, WIDTH = 1200, 1500
# GeoTIFF tags (code, type, count, value): ModelPixelScale, ModelTiepoint (pixel (10, 20) is
# at E 500000, N 4000000), GeoKeyDirectory (projected, PixelIsArea, EPSG:32632).
PIXEL_SCALE, TIEPOINT = (0.5, 0.25, 0.0), (10.0, 20.0, 0.0, 500000.0, 4000000.0, 0.0)
GEO_KEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632)


def geo_tags(pixel_is_point=False):
    keys = list(GEO_KEYS)
    keys[11] = 2 if pixel_is_point else 1
    return [(33550, 12, 3, PIXEL_SCALE), (33922, 12, 6, TIEPOINT), (34735, 3, 16, keys)]


def expected_map(x, y, half=0.0):
    """The tags' transform written out by hand (area convention; ``half`` for points)."""
    return (500000.0 + (x - half - 10) * 0.5, 4000000.0 - (y - half - 20) * 0.25)


@pytest.fixture(scope='module')
def pixels():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


LAYOUTS = {
    'tiled deflate': dict(tile=(256, 256), compression='zlib'),
    'tiled raw': dict(tile=(128, 256)),
    'tiled deflate bigtiff': dict(tile=(256, 256), compression='zlib', bigtiff=True),
    'strips deflate+predictor': dict(rowsperstrip=64, compression='zlib', predictor=True),
    'one raw strip': dict(),  # tifffile's default for uncompressed data
    'raw strips': dict(rowsperstrip=7),
}


@pytest.mark.parametrize('layout, kind', [(layout, 'rgb') for layout in sorted(LAYOUTS)] + [
    ('tiled deflate', 'grey'), ('strips deflate+predictor', 'rgba'), ('raw strips', 'rgb16')])
def test_windows_give_the_pixels_and_never_the_whole_image(pixels, tmp_path, layout, kind):
    want = dict(rgb=pixels, grey=pixels[..., 1], rgba=np.dstack([pixels, pixels[..., :1]]),
                rgb16=pixels)[kind]
    data = pixels.astype(np.uint16) * 256 + 7 if kind == 'rgb16' else want  # 16 bits: >> 8
    path = str(tmp_path / 'img.tif')
    tifffile.imwrite(path, data, **LAYOUTS[layout])
    with TiffImage(path) as image:
        assert image.shape == want.shape and image.dtype == np.uint8
        for window in slice_windows(HEIGHT, WIDTH, 320, 0.25):
            x1, y1, x2, y2 = window
            np.testing.assert_array_equal(image[y1:y2, x1:x2], want[y1:y2, x1:x2])
            np.testing.assert_array_equal(read_window(image, window), read_window(want, window))
        np.testing.assert_array_equal(image[-7:, :5], want[-7:, :5])
        # Only strips/tiles (raw strips: row blocks of ~1 MiB) were decoded, each once (the
        # cache holds this small image), never the image as a whole.
        row_bytes = data[0].nbytes
        segment = (256 * 256 if 'tiled' in layout else 64 * WIDTH if 'deflate' in layout
                   else (1 << 20) // row_bytes * WIDTH)
        assert 0 < image.largest_block <= segment < HEIGHT * WIDTH
        assert image.largest_read == 320 * 320
        assert image.pixels_decoded == HEIGHT * WIDTH
        with pytest.raises(TypeError, match='window by window'):
            np.asarray(image)


def test_overview_reads_bands_and_matches_opencv(pixels, tmp_path):
    """The overview of a TIFF equals INTER_AREA of the whole array, read in bands."""
    path = str(tmp_path / 'img.tif')
    tifffile.imwrite(path, pixels, tile=(256, 256), compression='zlib')
    factor = grid.overview_factor(HEIGHT, WIDTH, 400)
    assert factor == 4
    with TiffImage(path) as image:
        small = grid.read_overview(image, factor, band_pixels=200_000)
        assert image.largest_read <= 200_000 + WIDTH * factor
    want = cv2.resize(pixels[:HEIGHT // 4 * 4, :WIDTH // 4 * 4], (WIDTH // 4, HEIGHT // 4),
                      interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(small, want)


@pytest.mark.parametrize('pixel_is_point', [False, True])
def test_geotiff_boxes_in_map_coordinates(pixels, tmp_path, pixel_is_point):
    path = str(tmp_path / 'geo.tif')
    tifffile.imwrite(path, pixels[:200, :300], tile=(64, 64), extratags=geo_tags(pixel_is_point))
    with TiffImage(path) as image:
        geo = image.geo
    assert geo.crs == 'EPSG:32632' and geo.geokeys['GTRasterTypeGeoKey'] == (
        2 if pixel_is_point else 1)
    half = 0.5 if pixel_is_point else 0.0
    boxes = np.array([[10, 20, 30, 60], [0, 0, 300, 200]], np.float32)
    got = geo.to_map(boxes)
    for box, row in zip(boxes, got):
        (ax, ay), (bx, by) = expected_map(box[0], box[1], half), expected_map(box[2], box[3],
                                                                              half)
        np.testing.assert_allclose(row, [ax, by, bx, ay])
    entry, anns = {}, [dict(bbox=[10.0, 20.0, 20.0, 40.0])]
    large_image.add_map_boxes(geo, entry, anns)
    assert entry['geo']['crs'] == 'EPSG:32632' and json.dumps(entry)  # JSON-ready
    np.testing.assert_allclose(anns[0]['bbox_map'], got[0])


def test_geotiff_model_transformation_with_rotation():
    """ModelTransformation (4x4) maps (x, y) -> (a x + b y + c, d x + e y + f)."""
    matrix = [2.0, 1.0, 0.0, 100.0, 0.5, -3.0, 0.0, 50.0, 0, 0, 0, 0, 0, 0, 0, 1]
    geo = GeoReference.from_tags({'ModelTransformation': matrix, 'GTRasterTypeGeoKey': 1,
                                  'ProjectedCSTypeGeoKey': 32767})
    assert geo.transform == (2.0, 1.0, 100.0, 0.5, -3.0, 50.0) and geo.crs is None
    corners = [(x, y) for x in (4, 10) for y in (6, 8)]
    xs = [2 * x + y + 100 for x, y in corners]
    ys = [0.5 * x - 3 * y + 50 for x, y in corners]
    np.testing.assert_allclose(geo.to_map(np.array([[4, 6, 10, 8]]))[0],
                               [min(xs), min(ys), max(xs), max(ys)])
    assert GeoReference.from_tags({'GTModelTypeGeoKey': 1}) is None  # keys, no transform


def test_missing_tifffile_says_how_to_install(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / 'img.tif')
    tifffile.imwrite(path, np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setitem(sys.modules, 'tifffile', None)  # import fails
    with pytest.raises(MissingPackageError, match=r"pip install 'mmyolo_vis_hooks\[sliced\]'"):
        TiffImage(path)
    # The tool: one line, exit 2, before the (missing) checkpoint is looked at.
    with pytest.raises(SystemExit) as exc:
        tool.main([path, DEMO_CONFIG, str(tmp_path / 'missing.pth')], prog='large_image_infer')
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert err[0].startswith('large_image_infer: error: reading TIFF files window by window '
                             "needs the 'tifffile' package"), err


@pytest.mark.parametrize('options', [
    dict(tile=(256, 256), compression='lzw'),
    dict(rowsperstrip=64, compression='lzw', predictor=True),
    dict(tile=(256, 256), compression='jpeg'),
    dict(tile=(256, 256), compression='zstd'),
], ids=['tiled lzw', 'strips lzw+predictor', 'tiled jpeg', 'tiled zstd'])
def test_codecs_of_imagecodecs_are_read_window_by_window(pixels, tmp_path, options):
    """GeoTIFFs are mostly LZW or JPEG: with imagecodecs (the sliced extra) they are read
    window by window too; every window equals tifffile's decoding of the whole file (JPEG is
    lossy, so that, not the written pixels, is the reference)."""
    pytest.importorskip('imagecodecs')
    path = str(tmp_path / 'img.tif')
    tifffile.imwrite(path, pixels, **options)
    whole = tifffile.imread(path)
    if options['compression'] != 'jpeg':
        np.testing.assert_array_equal(whole, pixels)
    with TiffImage(path) as image:
        for window in slice_windows(HEIGHT, WIDTH, 320, 0.25):
            np.testing.assert_array_equal(read_window(image, window), read_window(whole, window))
        assert image.pixels_decoded == HEIGHT * WIDTH  # each segment once, never the whole


def test_bad_tiffs_are_refused_clearly(pixels, tmp_path):
    path = str(tmp_path / 'planar.tif')
    tifffile.imwrite(path, pixels[:64, :64].transpose(2, 0, 1).copy(), planarconfig='separate',
                     photometric='rgb')
    with pytest.raises(ValueError, match='own plane'):
        TiffImage(path)
    np.testing.assert_array_equal(images.open_image(path), pixels[:64, :64])  # small: OpenCV
    path = str(tmp_path / 'one_strip.tif')
    tifffile.imwrite(path, pixels, compression='zlib', rowsperstrip=HEIGHT)
    with pytest.raises(ValueError, match="smaller tiles"):
        TiffImage(path, max_segment_bytes=1 << 20)
    (tmp_path / 'bad.tif').write_bytes(b'not a tiff at all')
    with pytest.raises(ValueError, match='cannot read TIFF'):
        images.open_image(str(tmp_path / 'bad.tif'))


@pytest.mark.slow
def test_tool_on_tiffs_equals_png_and_never_reads_them_whole(random_checkpoint, tmp_path,
                                                             monkeypatch, capsys):
    """A folder of the same 1500x1200 pixels as PNG, tiled TIFF, strip TIFF and GeoTIFF: the
    same boxes for all; a TIFF is only ever read in windows (slices, overview bands); the
    slice bar counts each image's slices; with a huge-image threshold below these images the
    pictures are overviews; the GeoTIFF's boxes come with map coordinates."""
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_image
    ann = json.loads(open(generate_large_image(str(tmp_path / 'gen'), seed=3, width=WIDTH,
                                               height=HEIGHT, num_objects=40)).read())
    assert ann['images'][0]['width'] == WIDTH
    rgb = images.read_rgb(str(tmp_path / 'gen' / 'large_00000.png'))
    folder = tmp_path / 'imgs'
    folder.mkdir()
    images.write_rgb(str(folder / 'a.png'), rgb)
    tifffile.imwrite(folder / 'b_tiled.tif', rgb, tile=(256, 256), compression='zlib')
    tifffile.imwrite(folder / 'c_strips.tif', rgb, rowsperstrip=16)
    tifffile.imwrite(folder / 'd_geo.tif', rgb, tile=(512, 512), extratags=geo_tags())
    reads = []
    real_read = TiffImage.read
    monkeypatch.setattr(TiffImage, 'read', lambda self, y1, y2, x1, x2: reads.append(
        (y2 - y1) * (x2 - x1)) or real_read(self, y1, y2, x1, x2))
    monkeypatch.setattr(grid, 'HUGE_IMAGE_PIXELS', HEIGHT * WIDTH - 1)
    monkeypatch.setattr(grid, 'OVERVIEW_MAX_SIDE', 500)
    monkeypatch.setattr(grid, 'OVERVIEW_BAND_PIXELS', 200_000)
    out = tmp_path / 'out'
    doc = tool.infer([str(folder), DEMO_CONFIG, random_checkpoint, '--out-dir', str(out),
                      '--score-thr', str(LOW_THR), '--batch-size', '8', '--debug',
                      '--full-image'])
    assert 'failed' not in doc
    num_slices = len(slice_windows(HEIGHT, WIDTH, 320, 0.25))
    assert reads and max(reads) <= 200_000  # slices (320 x 320) and overview bands only
    err = capsys.readouterr().err
    for name in ('b_tiled.tif', 'c_strips.tif', 'd_geo.tif'):
        assert f'{num_slices}/{num_slices}' in err and name in err
    by_image = {img['file_name']: [] for img in doc['images']}
    names = {img['id']: img['file_name'] for img in doc['images']}
    for a in doc['annotations']:
        by_image[names[a['image_id']]].append(a)
    key = lambda anns: sorted((a['category_id'], a['bbox'], a['score']) for a in anns)  # noqa
    assert len(by_image['a.png']) > 10
    for name in ('b_tiled.tif', 'c_strips.tif', 'd_geo.tif'):
        assert key(by_image[name]) == key(by_image['a.png']), name
    # Overviews (factor 3: 400x500) with the boxes and the grid, instead of full pictures.
    for stem in ('a', 'b_tiled', 'd_geo'):
        overview = cv2.imread(str(out / f'{stem}_overview.png'))
        debug = cv2.imread(str(out / f'{stem}_debug.png'))
        assert overview.shape == debug.shape == (400, 500, 3)
        plain = cv2.resize(rgb[..., ::-1], (500, 400), interpolation=cv2.INTER_AREA)
        assert (overview != plain).any(axis=2).mean() > 0.01  # boxes drawn
    assert not (out / 'b_tiled.tif').exists()
    # The GeoTIFF: CRS and transform on the image, map boxes on its annotations only.
    geo_image = next(i for i in doc['images'] if i['file_name'] == 'd_geo.tif')
    assert geo_image['geo']['crs'] == 'EPSG:32632'
    assert all('geo' not in i for i in doc['images'] if i is not geo_image)
    for a in doc['annotations']:
        if names[a['image_id']] != 'd_geo.tif':
            assert 'bbox_map' not in a
            continue
        x, y, w, h = a['bbox']
        (x1, y2), (x2, y1) = expected_map(x, y), expected_map(x + w, y + h)
        np.testing.assert_allclose(a['bbox_map'], [x1, y1, x2, y2], atol=1e-6)
    assert json.loads((out / 'detections.json').read_text()) == doc

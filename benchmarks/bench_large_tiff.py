"""Images bigger than memory: peak RSS of the large-image tool on a 20000x20000x3 TIFF.

Generates the image (1.2 GB of RGB pixels: the shapes of the embedded data, drawn band by band,
never held whole) as

- ``tiled``: 256x256 tiles, deflate (what GDAL/COG users have);
- ``strips``: uncompressed, ONE strip (what ``tifffile.imwrite``/``tifffile.memmap`` and
  OpenCV write for an uncompressed image: "untiled");
- ``strips-deflate`` (optional): deflate strips of 16 rows (libtiff's usual layout);

then runs, each in its own child process, whose peak resident memory is printed: ``VmHWM`` of
``/proc/self/status`` read by the child as it exits, i.e. the whole process (Python, torch, the
model, the reads, the pictures). (``ru_maxrss`` of the child would not do: Python starts
children with vfork, and Linux then counts the PARENT's peak into the child's ``ru_maxrss``.)

(m) the model alone: build the detector and run one batch of slices (the floor under any run);
(t) the tool end to end on each layout (``mmyolo_vis_hooks.cli.large_image_infer``: slices
    read window by window, inference, merge, overview picture, ``detections.json``);
(w) for reference, decoding the strips file whole (``tifffile.imread``): what reading it the
    ordinary way costs before any model is built.

Peak RSS against the 1.5 GB target and against the image's own size, and wall times (the
machine's load average is printed: other jobs slow the runs, not the memory). Checked (the run
exits with 1 otherwise): every tool run succeeds, and every layout gives the same
``detections.json`` annotations. Measured figures: docs/benchmarks.md.

Usage::

    python benchmarks/bench_large_tiff.py [--size 20000] [--layouts tiled strips]
        [--dir /tmp/big_tiffs --keep] [--threads 1]
    python benchmarks/bench_large_tiff.py --small   # a quick check (the tests run it)
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Tuple

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TARGET_BYTES = 1.5e9
LAYOUTS = ('tiled', 'strips', 'strips-deflate')
BAND = 512  # rows drawn at once (one band: 512 x 20000 x 3 = 31 MB)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=20000, help='image side in pixels')
    parser.add_argument('--layouts', nargs='+', choices=LAYOUTS, default=['tiled', 'strips'])
    parser.add_argument('--config', default=osp.join(ROOT, 'configs/demo/yolov5_n_shapes.py'))
    parser.add_argument('--checkpoint',
                        default=osp.join(ROOT, 'tests/assets/yolov5_n_shapes.pth'))
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--threads', type=int, default=1,
                        help='torch/OpenMP threads of the children (1 leaves a core to others)')
    parser.add_argument('--dir', default=None,
                        help='where the TIFFs are written (reused if already there); a '
                        'temporary folder by default')
    parser.add_argument('--keep', action='store_true', help='keep the TIFFs and outputs')
    parser.add_argument('--small', action='store_true',
                        help='quick check that it runs and the layouts agree: a 1536x1536 '
                        'image, tiled and strips')
    args = parser.parse_args()
    if args.small:
        args.size, args.layouts = 1536, ['tiled', 'strips']
    return args


def bands(size: int, seed: int = 0) -> Iterator[Tuple[int, np.ndarray]]:
    """(first row, RGB band) of the image, drawn 512x512 cell by cell with the embedded data's
    renderer (noisy textured background, 16-40 px shapes), each cell its own random stream."""
    from mmyolo_vis_hooks.data.synthetic_shapes import render_image
    for y in range(0, size, BAND):
        rows = min(BAND, size - y)
        band = np.empty((rows, size, 3), np.uint8)
        for x in range(0, size, BAND):
            cols = min(BAND, size - x)
            rng = np.random.default_rng([seed, y // BAND, x // BAND])
            band[:, x:x + cols] = render_image(rng, rows, cols, 6, (16, 40))[0]
        yield y, band


def write_tiff(path: str, layout: str, size: int) -> None:
    import tifffile
    if layout == 'strips':  # uncompressed, one contiguous strip, filled band by band
        image = tifffile.memmap(path, shape=(size, size, 3), dtype=np.uint8, photometric='rgb')
        for y, band in bands(size):
            image[y:y + len(band)] = band
            image.flush()
        del image
        return
    if layout == 'tiled':
        tile = 256

        def segments():
            for _, band in bands(size):
                for ty in range(0, len(band), tile):
                    for tx in range(0, size, tile):
                        out = np.zeros((tile, tile, 3), np.uint8)
                        part = band[ty:ty + tile, tx:tx + tile]
                        out[:part.shape[0], :part.shape[1]] = part
                        yield out
        options = dict(tile=(tile, tile))
    else:  # tifffile takes strips from an array only: the uncompressed file, mapped
        source = path.replace('strips-deflate', 'strips').replace('.part', '')
        if not osp.isfile(source):
            write_tiff(source, 'strips', size)
        tifffile.imwrite(path, tifffile.memmap(source, mode='r'), rowsperstrip=16,
                         photometric='rgb', compression='zlib', compressionargs=dict(level=1))
        return
    tifffile.imwrite(path, segments(), shape=(size, size, 3), dtype=np.uint8,
                     photometric='rgb', compression='zlib', compressionargs=dict(level=1),
                     **options)


# Runs ``-m module args`` or ``-c code args`` and writes its VmHWM (bytes) at exit.
PEAK_WRAPPER = """
import atexit, runpy, sys
def write_peak(path=sys.argv[1]):
    with open('/proc/self/status') as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))
    with open(path, 'w') as f:
        f.write(str(peak))
atexit.register(write_peak)
mode, target, sys.argv = sys.argv[2], sys.argv[3], [sys.argv[3]] + sys.argv[4:]
if mode == '-m':
    runpy.run_module(target, run_name='__main__', alter_sys=True)
else:
    exec(compile(target, '<bench child>', 'exec'), {'__name__': '__main__'})
"""


def run_child(argv: List[str], threads: int, log: str) -> Tuple[int, float, int]:
    """Runs ``python -m ...`` / ``python -c ...`` (``argv``) in a child process; returns its
    (peak RSS in bytes, wall seconds, exit code)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=ROOT)
    peak_file = log + '.peak'
    start = time.perf_counter()
    with open(log, 'w') as f:
        code = subprocess.call([sys.executable, '-c', PEAK_WRAPPER, peak_file, *argv],
                               stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    with open(peak_file) as f:
        return int(f.read()), wall, code


MODEL_ONLY = '''
import sys, numpy as np, torch
from mmyolo_vis_hooks.runtime.models import build_detector
from mmyolo_vis_hooks.engine.slicing import BatchPredictor
predictor = BatchPredictor(build_detector(sys.argv[1], sys.argv[2]))
rng = np.random.default_rng(0)
crops = [rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)] * int(sys.argv[3])
with predictor.guard():
    print(sum(len(d) for d in predictor.predict(crops, 0.3)), 'boxes')
'''
WHOLE = 'import sys, tifffile; print(tifffile.imread(sys.argv[1]).shape)'


def last_progress(log: str) -> str:
    """The slice bar's last count ``done/total`` shown in a child's log (tqdm refreshes at most
    10 times a second, and the bar of an image is cleared when it is done, so the last batch may
    not be shown)."""
    with open(log, errors='replace') as f:
        text = f.read().replace('\r', '\n')
    counts = [part.split('|')[-1].split()[0] for part in text.splitlines()
              if 'slice' in part and '/' in part.split('|')[-1]]
    return counts[-1] if counts else '?'


def mb(value: float) -> str:
    return f'{value / 1e6:,.0f} MB'


def main():
    args = parse_args()
    import tifffile
    folder = args.dir or tempfile.mkdtemp(prefix='bench_large_tiff_')
    os.makedirs(folder, exist_ok=True)
    image_bytes = args.size * args.size * 3
    rows: List[Dict] = []
    annotations: Dict[str, list] = {}
    try:
        paths = {}
        for layout in args.layouts:
            path = osp.join(folder, f'{layout}_{args.size}.tif')
            if not osp.isfile(path):
                start = time.perf_counter()
                write_tiff(path + '.part', layout, args.size)
                os.replace(path + '.part', path)  # an interrupted run leaves no broken file
                print(f'wrote {path} ({os.path.getsize(path) / 1e6:,.0f} MB on disk) in '
                      f'{time.perf_counter() - start:.0f} s', flush=True)
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                desc = (f'tiles {page.tilewidth}x{page.tilelength}' if page.is_tiled
                        else f'{len(page.dataoffsets)} strip(s) of {page.rowsperstrip} rows')
                print(f'{layout}: {page.shape}, {page.compression.name}, {desc}')
            paths[layout] = path

        load = os.getloadavg()
        log = osp.join(folder, 'model.log')
        peak, wall, code = run_child(['-c', MODEL_ONLY, args.config, args.checkpoint,
                                      str(args.batch_size)], args.threads, log)
        rows.append(dict(run='(m) model + one batch', peak=peak, wall=wall, code=code))
        print(f'{rows[-1]["run"]}: peak RSS {mb(peak)}, {wall:.1f} s', flush=True)
        for layout, path in paths.items():
            out = osp.join(folder, f'out_{layout}')
            log = osp.join(folder, f'tool_{layout}.log')
            peak, wall, code = run_child(
                ['-m', 'mmyolo_vis_hooks.cli.large_image_infer', path, args.config,
                 args.checkpoint, '--out-dir', out, '--batch-size', str(args.batch_size)],
                args.threads, log)
            boxes = '?'
            if code == 0:
                with open(osp.join(out, 'detections.json')) as f:
                    annotations[layout] = json.load(f)['annotations']
                boxes = len(annotations[layout])
            rows.append(dict(run=f'(t) tool, {layout}', peak=peak, wall=wall, code=code,
                             boxes=boxes, slices=last_progress(log)))
            print(f'{rows[-1]["run"]}: peak RSS {mb(peak)}, {wall:.1f} s, exit {code}, '
                  f'{boxes} boxes, slice bar last shown {rows[-1]["slices"]}', flush=True)
            if code != 0:
                with open(log, errors='replace') as f:
                    print(f.read()[-3000:])
        whole = paths.get('strips') or next(iter(paths.values()))
        peak, wall, code = run_child(['-c', WHOLE, whole], args.threads,
                                     osp.join(folder, 'whole.log'))
        rows.append(dict(run=f'(w) tifffile.imread, whole {osp.basename(whole)}', peak=peak,
                         wall=wall, code=code))
        load_end = os.getloadavg()

        print(f'\n{args.size}x{args.size}x3 = {mb(image_bytes)} of pixels; batch size '
              f'{args.batch_size}, {args.threads} thread(s) per child; load average '
              f'{load[0]:.1f} at the start, {load_end[0]:.1f} at the end, {os.cpu_count()} '
              f'CPUs')
        model_peak = rows[0]['peak']
        print(f'{"run":44s} {"peak RSS":>10s} {"/target":>8s} {"/image":>7s} {"-(m)":>9s} '
              f'{"wall":>8s}')
        for row in rows:
            print(f'{row["run"]:44s} {mb(row["peak"]):>10s} {row["peak"] / TARGET_BYTES:8.2f} '
                  f'{row["peak"] / image_bytes:7.2f} {mb(row["peak"] - model_peak):>9s} '
                  f'{row["wall"]:7.1f}s' + ('' if row['code'] == 0 else
                                            f'  FAILED (exit {row["code"]})'))
        tools = [r for r in rows if r['run'].startswith('(t)')]
        ok = all(r['code'] == 0 and r['peak'] < TARGET_BYTES for r in tools)
        print(f'target: every tool run below {mb(TARGET_BYTES)} peak RSS: '
              f'{"MET" if ok else "NOT MET"}')
        first = next(iter(annotations.values()), [])
        same = bool(first) and all(anns == first for anns in annotations.values())
        print(f'the same detections.json annotations ({len(first)} boxes) for every layout: '
              f'{same}')
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    failed = [r['run'] for r in tools if r['code'] != 0]
    if failed or not same:
        print(f'FAILED: {"runs failed: " + ", ".join(failed) if failed else ""}'
              f'{"" if same else " the layouts gave different (or no) annotations"}',
              file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()

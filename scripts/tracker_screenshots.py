"""Screenshots of each tracker's view of a short demo run (docs/trackers.md).

Not part of the test suite. Run from the repository root with the project's venv:

    .venv/bin/python scripts/tracker_screenshots.py [--out /tmp/tracker_shots] [--epochs 3]

1. Trains the demo config (``configs/demo/yolov5_n_shapes.py``) for a few epochs from the test
   detector's weights, validating every epoch, with FeatMapVisHook + BoxAMVisHook writing to
   TensorBoard, WandB (offline), MLflow (SQLite store) and DVCLive at once.
2. Serves TensorBoard and MLflow on loopback and photographs their own UI in headless Chromium
   (Debian's ``chromium``: ``apt-get install -y chromium``), driven by the Chrome DevTools
   protocol through ``playwright-core`` (``npm install playwright-core`` in ``--node-dir``).
3. WandB offline runs cannot be opened without a W&B server: the script renders the offline run's
   own files (``files/media/images/*.png`` and the history read by ``wandb leet inspect --json``)
   into a local HTML page and photographs that. It is not the W&B UI.
4. DVCLive writes its own HTML report (``report='html'``: ``report.html`` in its folder, made by
   ``Live.end`` while the run's custom plots are still in memory). Its charts are Vega-Lite
   specs whose three scripts the page loads from a CDN; the script photographs a copy whose
   script tags point at the same packages installed from npm (``vega``, ``vega-lite``,
   ``vega-embed`` in ``--node-dir``), showing only one image's and one layer's entries.

The PNGs go to ``--images`` (default ``docs/images``); every other file stays in ``--out``.
"""
import argparse
import glob
import html
import json
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import Dict, Iterator, List

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BIN = osp.dirname(sys.executable)
CHECKPOINT = osp.join(REPO, 'tests', 'assets', 'yolov5_n_shapes.pth')

CONFIG = '''\
_base_ = {base!r}
load_from = {checkpoint!r}  # the test detector: trained weights, so there are boxes to explain
train_cfg = dict(val_interval=1)
visualizer = dict(vis_backends=[
    dict(type='LocalVisBackend'),
    dict(type='ActivationStatsVisBackend'),  # TensorBoard
    dict(type='WandbActivationStatsVisBackend',
         init_kwargs=dict(mode='offline', project='mmyolo-vis-demo', settings=dict(console='off'))),
    dict(type='MLflowActivationStatsVisBackend', exp_name='mmyolo-vis-demo'),
    dict(type='DVCLiveActivationStatsVisBackend',
         init_kwargs=dict(save_dvc_exp=False, report='html')),
])
'''


def train(out: str, epochs: int) -> str:
    """Trains the demo run in ``out`` (its cwd: WandB and DVCLive look there) and returns the
    run's ``vis_data`` folder."""
    from mmyolo_vis_hooks import demo
    os.makedirs(out, exist_ok=True)
    config = osp.join(out, 'demo_trackers.py')
    with open(config, 'w') as f:
        f.write(CONFIG.format(base=osp.join(REPO, 'configs', 'demo', 'yolov5_n_shapes.py'),
                              checkpoint=CHECKPOINT))
    os.chdir(out)
    data_dir = osp.join(REPO, 'data')
    demo.ensure_demo_data(data_dir, 0)
    cfg = demo.build_config(config, work_dir=osp.join(out, 'work'), data_dir=data_dir,
                            epochs=epochs)
    result = demo.train(cfg, threads=1)
    print('\n'.join(demo.summary_lines(result)), flush=True)
    return vis_dir(out)


def vis_dir(out: str) -> str:
    dirs = sorted(glob.glob(osp.join(out, 'work', '*', 'vis_data')))
    if not dirs:
        raise SystemExit(f'tracker_screenshots.py: error: no run in {out}/work (train first)')
    return dirs[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextmanager
def server(cmd: List[str], url: str, log: str) -> Iterator[str]:
    """Starts ``cmd`` (a server on loopback), waits until ``url`` answers, stops it after."""
    with open(log, 'w') as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f'server {cmd[0]} ended early, see {log}')
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: mlflow starts job consumers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def shoot(node_dir: str, jobs: List[Dict[str, object]]) -> None:
    """Runs scripts/tracker_screenshots.js (Playwright over Debian's chromium) on ``jobs``."""
    script = osp.join(REPO, 'scripts', 'tracker_screenshots.js')
    env = dict(os.environ, NODE_PATH=osp.join(node_dir, 'node_modules'))
    subprocess.run(['node', script, json.dumps(jobs)], check=True, env=env)


def wandb_page(vis: str, out: str, sample: str) -> str:
    """An HTML page of the offline run's own files: the images the hooks logged (their media
    files) and the statistics histories and histograms (the .wandb log read by WandB's own
    ``wandb leet inspect --json``)."""
    (run_file, ) = glob.glob(osp.join(vis, 'wandb', 'offline-run-*', 'run-*.wandb'))
    files = osp.join(osp.dirname(run_file), 'files')
    exe = shutil.which('wandb', path=BIN) or 'wandb'
    lines = subprocess.run([exe, 'leet', 'inspect', '--json', run_file], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    rows = [json.loads(x)['history']['item'] for x in lines
            if x.strip() and json.loads(x).get('type') == 'history']
    images, hists, scalars = {}, {}, {}
    for row in rows:
        step = row.get('step')
        for key, value in row.items():
            if key.endswith('._type') and value == 'image-file':
                tag = key[:-len('._type')]
                images.setdefault(tag, []).append((step, osp.join(files, row[f'{tag}.path'])))
            elif key.endswith('._type') and value == 'histogram':
                tag = key[:-len('._type')]
                hists[tag] = (step, row[f'{tag}.values'], row[f'{tag}.bins'])
            elif key.startswith('featmap_stats/') and isinstance(value, (int, float)):
                scalars.setdefault(key, []).append((step, value))
    parts = ['<html><head><meta charset="utf-8"><style>',
             'body{font-family:sans-serif;margin:16px;background:#fff}',
             'h1{font-size:18px}h2{font-size:14px;margin:12px 0 4px}',
             '.row{display:flex;gap:10px;flex-wrap:wrap}.card{border:1px solid #ccc;padding:6px}',
             '.card img{height:150px}.cap{font-size:11px;color:#333}',
             'table{font-size:11px;border-collapse:collapse}',
             'td,th{padding:2px 6px;border:1px solid #ddd}',
             '</style></head><body>',
             f'<h1>WandB offline run {html.escape(osp.basename(osp.dirname(run_file)))}: '
             'its own files rendered locally (not the W&amp;B UI)</h1>',
             '<div class="cap">media files from files/media/images/, steps and values from the '
             'run log through <code>wandb leet inspect --json</code></div>']
    last = {tag: steps[-1] for tag, steps in images.items() if f'/{sample}/' in tag}
    parts.append(f'<h2>images the hooks logged for {html.escape(sample)} (last epoch)</h2>'
                 '<div class="row">')
    for tag in sorted(last):
        step, path = last[tag]
        parts.append(f'<div class="card"><img src="file://{html.escape(path)}"><div class="cap">'
                     f'{html.escape(tag)} · step {step}</div></div>')
    parts.append('</div><h2>activation histograms (wandb.Histogram, last epoch)</h2>'
                 '<div class="row">')
    for tag in sorted(hists):
        step, values, bins = hists[tag]
        top = max(values) or 1
        width = 300 / len(values)
        bars = ''.join(f'<rect x="{i * width:.1f}" y="{100 - 100 * v / top:.1f}" '
                       f'width="{width:.1f}" height="{100 * v / top:.1f}" fill="#3b7dd8"/>'
                       for i, v in enumerate(values))
        parts.append(f'<div class="card"><svg width="300" height="100">{bars}</svg>'
                     f'<div class="cap">{html.escape(tag)} · step {step} · '
                     f'{bins[0]:.2g} … {bins[-1]:.2g}</div></div>')
    parts.append('</div><h2>statistics per epoch</h2><table><tr><th>key</th>')
    steps = sorted({s for series in scalars.values() for s, _ in series})
    parts += [f'<th>step {s}</th>' for s in steps] + ['</tr>']
    for key in sorted(scalars):
        by_step = dict(scalars[key])
        cells = ''.join(f'<td>{by_step[s]:.4f}</td>' if s in by_step else '<td></td>'
                        for s in steps)
        parts.append(f'<tr><td>{html.escape(key)}</td>{cells}</tr>')
    parts.append('</table></body></html>')
    page = osp.join(out, 'wandb_offline_run.html')
    with open(page, 'w') as f:
        f.write('\n'.join(parts))
    return page


def dvclive_page(vis: str, out: str, node_dir: str) -> str:
    """A copy of DVCLive's ``report.html`` whose Vega scripts are the npm packages in
    ``node_dir`` (the report loads them from a CDN, unreachable here), without its 5-second
    refresh (the run is over)."""
    (report, ) = glob.glob(osp.join(vis, '**', 'report.html'), recursive=True)
    with open(report, encoding='utf-8') as f:
        page = f.read()
    modules = osp.join(node_dir, 'node_modules')
    for name in ('vega', 'vega-lite', 'vega-embed'):
        local = osp.join(modules, name, 'build', f'{name}.min.js')
        if not osp.isfile(local):
            raise SystemExit(f'tracker_screenshots.py: error: {local} is missing '
                             f'(npm install --prefix {node_dir} {name})')
        pattern = f'src="https://cdn.jsdelivr.net/npm/{name}@'
        if pattern not in page:
            raise SystemExit(f'tracker_screenshots.py: error: {report} loads no {name} script')
        start = page.index(pattern) + len('src="')
        page = page[:start] + 'file://' + local + page[page.index('"', start):]
    page = page.replace('<meta http-equiv="refresh" content="5">', '')
    copy = osp.join(out, 'dvclive_report.html')
    with open(copy, 'w', encoding='utf-8') as f:
        f.write(page)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(prog='tracker_screenshots.py', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='/tmp/tracker_shots', help='run and server files')
    parser.add_argument('--images', default=osp.join(REPO, 'docs', 'images'),
                        help='where the PNGs go. Defaults to docs/images')
    parser.add_argument('--epochs', type=int, default=3, help='training epochs. Defaults to 3')
    parser.add_argument('--node-dir', default='/tmp/tracker_shots_node',
                        help='folder with node_modules/playwright-core')
    parser.add_argument('--sample', default='val_00055',
                        help='the validation image shown. Defaults to val_00055')
    parser.add_argument('--skip-train', action='store_true', help='reuse the run in --out')
    args = parser.parse_args()
    out, images = osp.abspath(args.out), osp.abspath(args.images)
    if not osp.isdir(osp.join(args.node_dir, 'node_modules', 'playwright-core')):
        os.makedirs(args.node_dir, exist_ok=True)
        subprocess.run(['npm', 'install', '--prefix', args.node_dir, 'playwright-core',
                        'vega@5', 'vega-lite@5', 'vega-embed@6'], check=True)
    vis = vis_dir(out) if args.skip_train else train(out, args.epochs)
    os.makedirs(images, exist_ok=True)

    tag = f'{args.sample}/(neck\\[0\\]|gradcam)|featmap_stats/neck\\[0\\]'
    port = free_port()
    tb = [osp.join(BIN, 'tensorboard'), '--logdir', vis, '--host', '127.0.0.1', '--port',
          str(port), '--samples_per_plugin', 'images=100']
    with server(tb, f'http://127.0.0.1:{port}/data/runs', osp.join(out, 'tensorboard.log')):
        shoot(args.node_dir, [dict(kind='tensorboard', url=f'http://127.0.0.1:{port}/',
                                   tagFilter=tag, width=1500, height=940,
                                   png=osp.join(images, 'tracker_tensorboard.png'))])

    port = free_port()
    db = osp.join(vis, 'mlflow.db')
    ml = [osp.join(BIN, 'mlflow'), 'server', '--backend-store-uri', f'sqlite:///{db}',
          '--host', '127.0.0.1', '--port', str(port), '--workers', '1']
    with server(ml, f'http://127.0.0.1:{port}/health', osp.join(out, 'mlflow.log')):
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=f'sqlite:///{db}')
        exp = client.get_experiment_by_name('mmyolo-vis-demo')
        (run, ) = client.search_runs([exp.experiment_id])
        base = f'http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}'
        step = max(int(p.split('+step+')[1].split('+')[0])
                   for p in (a.path for a in client.list_artifacts(run.info.run_id, 'images')))
        (image, ) = [a.path for a in client.list_artifacts(run.info.run_id, 'images')
                     if a.path.startswith(f'images/featmap~{args.sample}~neck_0+step+{step}+')
                     and a.path.endswith('.png') and 'compressed' not in a.path]
        shoot(args.node_dir, [
            dict(kind='mlflow', url=f'{base}/artifacts/{image}', width=1400, height=900,
                 png=osp.join(images, 'tracker_mlflow_image.png')),
            dict(kind='mlflow', url=base, search='neck_0/', width=1400, height=680,
                 png=osp.join(images, 'tracker_mlflow_stats.png')),
        ])

    shoot(args.node_dir, [dict(kind='page', url='file://' + wandb_page(vis, out, args.sample),
                               minImages=2, fullPage=True, width=1250,
                               png=osp.join(images, 'tracker_wandb_offline_files.png'))])

    # The report's elements are named by their files, special characters made '_': keep the
    # sample's last-epoch pictures, neck[0]'s statistics and its last histogram.
    epoch = args.epochs
    keep = (f'^(featmap_{args.sample}_neck_0_|boxam_{args.sample}_gradcam)_?{epoch}_png$'
            r'|^static_featmap_stats_neck_0__(mean|std|dead_ratio|p50)$'
            f'|^featmap_stats_neck_0__{epoch}$')
    shoot(args.node_dir, [dict(kind='dvclive', url='file://' + dvclive_page(vis, out,
                                                                            args.node_dir),
                               keep=keep, minImages=2, minPlots=5, fullPage=True, width=1400,
                               png=osp.join(images, 'tracker_dvclive_report.png'))])
    for png in sorted(glob.glob(osp.join(images, 'tracker_*.png'))):
        shrink(png)
        print(f'{png}: {osp.getsize(png) // 1024} KB')


def shrink(png: str, limit: int = 400 * 1024) -> None:
    """Keeps a screenshot under ``limit`` bytes for the repository: a larger one is stored
    with a 256-colour palette (the UIs' flat colours survive; heat maps lose a little)."""
    if osp.getsize(png) > limit:
        from PIL import Image
        with Image.open(png) as img:
            small = img.convert('RGB').quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(png, optimize=True)


if __name__ == '__main__':
    main()

"""The large-image tool in several processes (``torchrun``, ``--launcher pytorch``, gloo on the
CPU): the same ``detections.json`` as one process, failing images reported without hanging a
rank; the sharding and the exchange of results (a rank that goes silent is given up)."""
import contextlib
import io
import json
import os
import os.path as osp
import re
import socket
import threading
import time

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as torch_dist

from helpers import DEMO_CONFIG, REPO_ROOT
from helpers.tools import run_bounded, run_bounded_together, torchrun_launcher
from mmyolo_vis_hooks.cli import large_image_infer as tool
from mmyolo_vis_hooks.runtime.distributed import (DistContext, ResultExchange, run_sharded,
                                                  shard)
from mmyolo_vis_hooks.runtime.large_image import detection_documents

PROG = 'large_image_infer'
TIMEOUT = 300  # a hang fails the test instead of the suite
TOOL = osp.join(REPO_ROOT, 'tools', 'large_image_infer.py')


@pytest.fixture(scope='module')
def eval_set(tmp_path_factory):
    """The embedded sliced-evaluation set: its folder and COCO ground truth."""
    from mmyolo_vis_hooks.data.synthetic_shapes import generate_large_eval_set
    root = str(tmp_path_factory.mktemp('large_eval'))
    return root, generate_large_eval_set(root, seed=0)


@pytest.fixture
def one_thread():
    """Torch on 1 thread, as every torchrun worker here (OMP_NUM_THREADS=1): the same kernels,
    so the same floats, in both runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _worker_env():
    """torchrun workers on 1 thread, importing this checkout."""
    return dict(os.environ, OMP_NUM_THREADS='1',
                PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get('PYTHONPATH', '')]))


def _torchrun(args, timeout=TIMEOUT):
    """``torchrun --standalone --nproc_per_node 2 tools/large_image_infer.py <args>
    --launcher pytorch`` in its own process group (killed whole on timeout, which fails)."""
    cmd = torchrun_launcher() + ['--standalone', '--nproc_per_node', '2', TOOL, *args,
                                 '--launcher', 'pytorch', '--no-progress']
    start = time.monotonic()
    code, out = run_bounded(cmd, timeout, _worker_env())
    return code, out, time.monotonic() - start


def _read(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _crops(eval_set, folder, names):
    """Small images for multi-process runs: 400x300 crops of an evaluation image, named
    ``names`` in order (at different places)."""
    folder.mkdir()
    image = cv2.imread(osp.join(eval_set[0], 'large_eval_00000.png'))
    for name, (y, x) in zip(names, ((0, 0), (300, 400), (500, 700))):
        cv2.imwrite(str(folder / name), image[y:y + 300, x:x + 400])
    return folder


@pytest.fixture(scope='module')
def single_run(eval_set, demo_checkpoint, tmp_path_factory):
    """One process, torch on 1 thread, on the evaluation set with ``--ann-file
    --full-image``: its output folder, ``detections.json`` and what it printed."""
    folder, ann_file = eval_set
    out = tmp_path_factory.mktemp('single')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            doc = tool.infer([folder, DEMO_CONFIG, demo_checkpoint, '--ann-file', ann_file,
                              '--full-image', '--out-dir', str(out), '--no-progress'],
                             prog=PROG)
    finally:
        torch.set_num_threads(threads)
    return out, doc, printed.getvalue()


@pytest.mark.slow
def test_sliced_and_full_image_coco_map_side_by_side(eval_set, single_run):
    """--ann-file --full-image on the embedded large images: a table of all classes and each
    class, the sliced and the full-image run side by side, computed on every ground-truth
    box; the same numbers in coco_eval.json."""
    _, ann_file = eval_set
    out, doc, printed = single_run
    gt = _read(ann_file)
    classes = [c['name'] for c in sorted(gt['categories'], key=lambda c: c['id'])]
    gt_counts = {name: sum(a['category_id'] == c['id'] for a in gt['annotations'])
                 for c, name in zip(sorted(gt['categories'], key=lambda c: c['id']), classes)}
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('class '))
    assert lines[start].split() == ['class', 'GT', 'sliced', 'mAP', 'sliced', 'mAP@50', 'full',
                                    'image', 'mAP', 'full', 'image', 'mAP@50']
    rows = [line.split() for line in lines[start + 2:start + 3 + len(classes)]]
    assert [r[0] for r in rows] == ['all'] + classes
    assert [int(r[1]) for r in rows] == [len(gt['annotations'])] + [gt_counts[c]
                                                                     for c in classes]
    assert f'{len(gt["images"])} image(s), {len(gt["annotations"])} ground-truth boxes' in printed

    report = _read(out / 'coco_eval.json')
    assert report['num_gt'] == len(gt['annotations']) and report['gt_per_class'] == gt_counts
    assert report['images'] == [im['file_name'] for im in gt['images']]
    sliced, full = report['runs']['sliced'], report['runs']['full image']
    for run, column in ((sliced, 2), (full, 4)):
        assert all(0 <= run[k] <= 1 for k in ('mAP', 'mAP_50', 'mAP_75'))
        assert rows[0][column:column + 2] == [f'{run["mAP"]:.3f}', f'{run["mAP_50"]:.3f}']
        for row in rows[1:]:
            assert row[column] == f'{run["per_class"][row[0]]["AP"]:.3f}'
    assert sliced['num_detections'] == len(doc['annotations']) > 0
    assert full['num_detections'] == len(_read(out / 'detections_full_image.json')[
        'annotations'])
    # What slicing is for: 12-32 px shapes shrink to 3-10 px when the image is letterboxed.
    assert sliced['mAP_50'] > full['mAP_50']


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(eval_set, demo_checkpoint, single_run,
                                                     tmp_path):
    """The trained demo detector on the embedded evaluation set (3 large images; rank 0 takes
    images 1 and 3, rank 1 image 2): detections.json, the full-image pass and the COCO
    evaluation of 2 gloo processes equal one process's."""
    folder, ann_file = eval_set
    single, doc, _ = single_run
    assert len(doc['images']) == 3 and len(doc['annotations']) > 0 and 'failed' not in doc
    code, out, _ = _torchrun([folder, DEMO_CONFIG, demo_checkpoint, '--ann-file', ann_file,
                              '--full-image', '--out-dir', str(tmp_path / 'dist')])
    assert code == 0, out[-6000:]
    for name in ('detections.json', 'detections_full_image.json', 'coco_eval.json'):
        assert _read(tmp_path / 'dist' / name) == _read(single / name), name
    # Each rank drew its own images; rank 0 alone wrote the documents and the table.
    assert sorted(p.name for p in (tmp_path / 'dist').glob('*.png')) == sorted(
        im['file_name'] for im in doc['images'])
    assert out.count('sliced mAP@50') == 1


@pytest.mark.slow
def test_a_corrupt_image_is_reported_and_no_rank_hangs(eval_set, demo_checkpoint, tmp_path,
                                                       one_thread, capsys):
    """A corrupt file in rank 1's share: rank 1 reports it with its path and goes on with its
    next image; rank 0 writes every other image and exits with code 3 (one process: the same
    report, the same documents, the same code)."""
    folder = _crops(eval_set, tmp_path / 'imgs', ('a.png', 'c.png', 'd.png'))
    corrupt = folder / 'b_corrupt.png'
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + np.random.default_rng(0).bytes(2000))
    flags = [str(folder), DEMO_CONFIG, demo_checkpoint]

    code, out, seconds = _torchrun(flags + ['--out-dir', str(tmp_path / 'dist')])
    assert code != 0, out[-6000:]
    assert f'[rank 1] skipped {corrupt}: ValueError: cannot decode image' in out, out[-6000:]
    assert '1 of 4 image(s) failed' in out and f'  {corrupt}: ' in out
    assert 'exitcode  : 3' in out  # torchrun's summary names rank 0's exit code
    dist_doc = _read(tmp_path / 'dist' / 'detections.json')
    assert [(im['id'], im['file_name']) for im in dist_doc['images']] == [
        (1, 'a.png'), (3, 'c.png'), (4, 'd.png')]  # d.png: rank 1 went on after the failure
    assert dist_doc['failed'] == [dict(file_name='b_corrupt.png', path=str(corrupt),
                                       error=dist_doc['failed'][0]['error'])]
    assert str(corrupt) in dist_doc['failed'][0]['error']

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        tool.main(flags + ['--out-dir', str(tmp_path / 'single'), '--no-progress'], prog=PROG)
    assert exc.value.code == tool.FAILED_IMAGES_EXIT_CODE == 3
    err = capsys.readouterr().err
    assert f'skipped {corrupt}: ValueError' in err and '1 of 4 image(s) failed' in err
    assert _read(tmp_path / 'single' / 'detections.json') == dist_doc


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_machines_on_loopback_write_what_one_process_writes(eval_set, demo_checkpoint,
                                                                tmp_path, one_thread):
    """The multi-machine line of docs/sliced.md, with both "machines" on this host: two torchrun
    agents (``--nnodes 2 --node_rank 0/1``, one process each, static rendezvous at the
    master's address), so both workers have LOCAL_RANK 0 and RANK 0/1, and each writes into
    its own output folder, as machines that share no disk would. Machine 0 writes the
    documents, equal to one process's; machine 1 only the picture of its own image."""
    folder = _crops(eval_set, tmp_path / 'imgs', ('a.png', 'b.png', 'c.png'))
    flags = [str(folder), DEMO_CONFIG, demo_checkpoint, '--launcher', 'pytorch',
             '--no-progress']
    port = str(_free_port())
    machines = [torchrun_launcher() + [
        '--nnodes', '2', '--nproc_per_node', '1', '--node_rank', str(node),
        '--master_addr', '127.0.0.1', '--master_port', port, TOOL, *flags,
        '--out-dir', str(tmp_path / f'machine{node}')] for node in (0, 1)]
    results = run_bounded_together(machines, TIMEOUT, _worker_env())
    assert [code for code, _ in results] == [0, 0], '\n'.join(out for _, out in results)[-6000:]
    single = tool.infer(flags[:3] + ['--out-dir', str(tmp_path / 'single'), '--no-progress'],
                        prog=PROG)
    assert len(single['annotations']) > 0
    assert _read(tmp_path / 'machine0' / 'detections.json') == single
    assert sorted(p.name for p in (tmp_path / 'machine0').iterdir()) == [
        'a.png', 'c.png', 'detections.json']
    assert sorted(p.name for p in (tmp_path / 'machine1').iterdir()) == ['b.png']


# --------------------------------------------------------------------------- no detector


def test_shards_cover_every_image_once():
    for num, world in ((1, 2), (3, 2), (7, 3), (4, 4), (10, 1)):
        parts = [shard(num, r, world) for r in range(world)]
        assert sorted(i for p in parts for i in p) == list(range(num))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _context(store, rank, timeout):
    return DistContext(rank=rank, world_size=3, backend=None,
                       store=torch_dist.PrefixStore('test', store), timeout=timeout)


def test_rank_0_collects_records_and_gives_up_a_silent_rank():
    """Rank 1 publishes both its images and finishes; rank 2 publishes one of its two and goes
    silent (crashed): rank 0 keeps what arrived and reports the other, within the timeout."""
    store = torch_dist.HashStore()
    paths = [f'/in/{i}.png' for i in range(6)]
    names = [osp.basename(p) for p in paths]
    one = ResultExchange(_context(store, 1, 1.0))
    for index in shard(6, 1, 3):
        one.publish(dict(index=index, path=paths[index], file_name=names[index], width=4,
                         height=3, annotations=[]))
    one.finish()
    two = ResultExchange(_context(store, 2, 1.0))
    two.publish(dict(index=2, path=paths[2], file_name=names[2], error='ValueError: bad'))
    messages = []
    collector = ResultExchange(_context(store, 0, 1.0), poll=0.05, log=messages.append)
    start = time.monotonic()
    records = {r['index']: r for r in collector.collect(paths, names)}
    assert 1.0 < time.monotonic() - start < 10
    assert sorted(records) == [1, 2, 4, 5]  # rank 0's own (0, 3) are not exchanged
    assert records[1]['width'] == 4 and records[4]['annotations'] == []
    assert records[2]['error'] == 'ValueError: bad'
    assert records[5] == dict(index=5, path='/in/5.png', file_name='5.png', error=(
        'not processed: rank 2 stopped (no sign of life for 1 s)'))
    assert messages == ['rank 2 gave no sign of life for 1 s; its missing images are '
                        'reported as failed']


def test_a_rank_listing_other_images_reports_them_at_once():
    """Rank 1 sees another folder than rank 0 (machines without the same files): its share
    comes back as failed right away instead of wrong boxes or a wait."""
    store = torch_dist.HashStore()
    names = ['a.png', 'b.png', 'c.png', 'd.png']

    def records(share):
        return iter([dict(index=i, path=names[i], file_name=names[i], width=1, height=1,
                          annotations=[]) for i in share])

    main = _context(store, 0, 60.0)
    assert ResultExchange(main).same_inputs(names)  # rank 0 posts its list first
    assert run_sharded(records, names[:3] + ['x.png'], names[:3] + ['x.png'],
                       _context(store, 1, 60.0)) is None
    assert run_sharded(records, names, names, _context(store, 2, 60.0)) is None
    start = time.monotonic()
    gathered = {r['index']: r for r in run_sharded(records, names, names, main)}
    assert time.monotonic() - start < 5
    assert sorted(gathered) == [0, 1, 2, 3]
    assert 'rank 1 lists other input images than rank 0' in gathered[1]['error']
    assert all('error' not in gathered[i] for i in (0, 2, 3))


def test_a_beating_rank_is_waited_for():
    """A rank whose heartbeat moves is not given up, however long its images take."""
    store = torch_dist.HashStore()
    worker = _context(store, 1, 0.5)
    worker.start_heartbeat(interval=0.05)
    try:
        exchange = ResultExchange(worker)
        collector = ResultExchange(_context(store, 0, 0.5), poll=0.05)
        late = threading.Timer(1.5, lambda: (exchange.publish(dict(
            index=1, path='b', file_name='b', width=1, height=1, annotations=[])),
            exchange.finish()))
        late.start()
        records = collector.collect(['a', 'b'], ['a', 'b'])
        late.join()
    finally:
        worker.close()
    assert records == [dict(index=1, path='b', file_name='b', width=1, height=1,
                            annotations=[])]


def test_documents_do_not_depend_on_the_order_records_arrive_in():
    ann = dict(image_id=2, category_id=1, bbox=[1, 2, 3, 4], area=12, score=0.5, iscrowd=0)
    records = [dict(index=0, path='p/a.png', file_name='a.png', width=5, height=6,
                    annotations=[dict(ann, image_id=1)] * 2),
               dict(index=1, path='p/b.png', file_name='b.png', error='ValueError: corrupt'),
               dict(index=2, path='p/c.png', file_name='c.png', width=7, height=8,
                    annotations=[dict(ann, image_id=3)])]
    doc, full = detection_documents(records, ['x'])
    assert detection_documents(records[::-1], ['x']) == (doc, full) and full is None
    assert [im['id'] for im in doc['images']] == [1, 3]
    assert [(a['id'], a['image_id']) for a in doc['annotations']] == [(1, 1), (2, 1), (3, 3)]
    assert doc['failed'] == [dict(file_name='b.png', path='p/b.png',
                                  error='ValueError: corrupt')]


def test_launcher_without_torchrun_and_bad_ann_file_stop_before_any_work(tmp_path, capsys,
                                                                        monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    img = tmp_path / 'img.png'
    cv2.imwrite(str(img), np.zeros((40, 40, 3), np.uint8))
    bad_json = tmp_path / 'bad.json'
    bad_json.write_text('{"images": []}')
    other = tmp_path / 'other.json'
    other.write_text(json.dumps(dict(images=[dict(id=1, file_name='x.png')], annotations=[],
                                     categories=[])))
    cases = [(['--launcher', 'pytorch'], 'torchrun'),
             (['--launcher', 'slurm'], 'invalid choice'),
             (['--dist-timeout', '0'], 'positive number of seconds'),
             (['--ann-file', str(tmp_path / 'missing.json')], 'annotation file not found'),
             (['--ann-file', str(bad_json)], 'not a COCO annotation file'),
             (['--ann-file', str(other)], "none of the 1 input image.* is in .*'x.png'")]
    for flags, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            tool.main([str(img), DEMO_CONFIG, str(tmp_path / 'missing.pth'), '--out-dir',
                       str(tmp_path / 'out'), *flags], prog=PROG)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1, (flags, err)
        assert err[0].startswith(f'{PROG}: error: ') and re.search(message, err[0]), err
    assert not (tmp_path / 'out').exists()

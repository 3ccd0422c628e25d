"""Sliced inference on large images with an MMYOLO detector.

The flags of MMYOLO's ``demo/large_image_demo.py`` (image or folder, config, checkpoint,
``--patch-size``, ``--patch-overlap-ratio``, ``--merge-iou-thr``, ``--merge-nms-type``,
``--batch-size``, ``--debug``, ``--save-patch``, ``--score-thr``, ``--out-dir``, ``--show``,
``--device``), plus sahi's merge choices (``--merge-nms-type nms|nmm|greedynmm`` next to
MMYOLO's ``soft_nms``, ``--merge-metric IOU|IOS``), ``--class-agnostic``, ``--full-image``,
``--fuse-conv-bn``, ``--cfg-options``, ``--unsafe-load`` and ``--png-compression``;
``--ann-file`` (COCO mAP of the merged boxes, and with ``--full-image`` of the full-image pass,
side by side, per class), ``--launcher pytorch`` (several processes started by ``torchrun``:
the images are shared out, rank 0 writes one ``detections.json``) and ``--dist-timeout``.

Writes to ``--out-dir``: ``<name>`` (the image with the merged boxes), ``detections.json``
(COCO-style: images, categories with id = label + 1, annotations with scores; a ``failed``
list when some images failed), with ``--full-image`` ``detections_full_image.json`` (the
full-image pass alone), with ``--ann-file`` ``coco_eval.json``, with ``--debug``
``<stem>_debug.png`` (slice grid + unmerged boxes), with ``--save-patch``
``patches/<stem>/<stem>_<index>_<x>_<y>.png`` (each slice with its own boxes).

Exit codes: 0; 2 for bad arguments (one line, nothing done); 3 when some images failed
(unreadable, corrupt): the others are processed and written, the failed ones are listed on
stderr and in ``detections.json``. Under ``torchrun`` the exit code is rank 0's (torchrun
itself then exits with 1).

Example::

    python tools/large_image_infer.py data/large/large_00000.png \\
        configs/demo/yolov5_n_shapes.py tests/assets/yolov5_n_shapes.pth \\
        --batch-size 8 --class-agnostic --out-dir outputs/large
    torchrun --nproc_per_node 2 tools/large_image_infer.py data/large_eval \\
        configs/demo/yolov5_n_shapes.py tests/assets/yolov5_n_shapes.pth --launcher pytorch \\
        --ann-file data/large_eval/large_eval.json --full-image --out-dir outputs/eval
"""
import argparse
import os
import sys
from typing import Dict, Optional, Sequence

from mmengine.config import DictAction

from ..engine.slicing import BatchPredictor, MergeConfig, SliceSettings
from ..engine.slicing.merge import check_merge_for
from ..runtime.images import list_images
from ..runtime.distributed import (DEFAULT_TIMEOUT, LAUNCHERS, DistContext, check_launcher,
                                   init_distributed)
from ..runtime.large_image import (ImagePrefetcher, LargeImageRunner, check_ground_truth,
                                   evaluate_documents, output_names, run_job)
from ..runtime.memory import keep_freed_memory
from ..runtime.models import build_detector
from .common import DEBUG_ENV, ToolArgumentParser, add_device_arg, run_tool, show_image

MERGE_TYPES = ('nms', 'soft_nms', 'nmm', 'greedynmm')
# Exit code of a run in which some images failed (2 is argparse's, for bad arguments).
FAILED_IMAGES_EXIT_CODE = 3


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = ToolArgumentParser(
        prog=prog,
        description='Sliced (tiled) inference on large images with an MMYOLO detector.')
    parser.add_argument('img', help='image file, folder (searched recursively) or .txt list '
                        'of image paths')
    parser.add_argument('config', help='config file (or mmyolo:: name)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='./output', help='output folder')
    add_device_arg(parser)
    parser.add_argument('--show', action='store_true', help='show each result in a window')
    parser.add_argument('--score-thr', type=float, default=0.3, help='box score threshold')
    parser.add_argument('--patch-size', type=int, default=None,
                        help='slice side in pixels (default: the model input size, so slices '
                        'are not resized)')
    parser.add_argument('--patch-overlap-ratio', type=float, default=0.25,
                        help='overlap of neighbouring slices, in [0, 1)')
    parser.add_argument('--merge-iou-thr', type=float, default=0.25,
                        help='overlap threshold for merging the slices\' boxes')
    parser.add_argument('--merge-nms-type', type=str.lower, default='nms', choices=MERGE_TYPES,
                        help='how the slices\' boxes are merged')
    parser.add_argument('--merge-metric', type=str.upper, default='IOU', choices=('IOU', 'IOS'),
                        help='overlap measure of the merge: IoU, or intersection over the '
                        'smaller box (IOS)')
    parser.add_argument('--class-agnostic', action='store_true',
                        help='merge boxes across labels (a class-wise merge keeps one object '
                        'once per predicted label)')
    parser.add_argument('--full-image', action='store_true',
                        help='also run the whole image (letterboxed) and merge its boxes')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='slices per forward pass')
    parser.add_argument('--debug', action='store_true',
                        help='also write <stem>_debug.png: slice grid and unmerged boxes')
    parser.add_argument('--save-patch', action='store_true',
                        help='also write every slice with its own boxes')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fuse conv and bn layers (faster inference)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='load a checkpoint holding arbitrary pickled objects (runs code '
                        'from the file; only for files you trust)')
    parser.add_argument('--png-compression', type=int, default=0, choices=range(10),
                        metavar='{0..9}',
                        help='zlib level of the PNG pictures written; 0 (default) stores them '
                        'uncompressed (3000x2000 here: 0.03 s CPU, 18 MB; level 1: 0.39 s, '
                        '12 MB, a third of that image\'s whole run)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--ann-file', default=None,
                        help='COCO ground truth of the images: prints the COCO mAP (overall '
                        'and per class) of the merged boxes and, with --full-image, of the '
                        'full-image pass side by side, and writes them to coco_eval.json')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher: pytorch when started by torchrun (the images are '
                        'shared out among the processes; rank 0 writes detections.json)')
    parser.add_argument('--dist-timeout', type=float, default=DEFAULT_TIMEOUT,
                        help='seconds without a sign of life from a process before rank 0 '
                        'gives it up and reports its images as failed (default '
                        f'{DEFAULT_TIMEOUT:g})')
    # torch.distributed.launch passes --local_rank (MMEngine tools accept both spellings).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser


def settings_from_args(args: argparse.Namespace) -> SliceSettings:
    """Checks every slicing argument (ValueError/TypeError) before any work is done."""
    merge = MergeConfig(method=args.merge_nms_type, metric=args.merge_metric,
                        threshold=args.merge_iou_thr, class_agnostic=args.class_agnostic)
    return SliceSettings(patch_size=args.patch_size, overlap_ratio=args.patch_overlap_ratio,
                         batch_size=args.batch_size, score_thr=args.score_thr,
                         full_image=args.full_image, merge=merge)


def run(args: argparse.Namespace) -> Optional[Dict]:
    settings = settings_from_args(args)
    if args.launcher == 'pytorch':
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    check_launcher(args.launcher, args.dist_timeout)
    paths = list_images(args.img)
    names = output_names(args.img, paths)
    if args.ann_file:
        check_ground_truth(args.ann_file, names)
    ctx = init_distributed(args.launcher, args.device, args.dist_timeout)
    try:
        return _run(args, settings, paths, names, ctx)
    finally:
        ctx.close()


def _run(args: argparse.Namespace, settings: SliceSettings, paths: Sequence[str],
         names: Sequence[str], ctx: DistContext) -> Optional[Dict]:
    keep_freed_memory()
    # The first image is read while the model is built.
    prefetcher = ImagePrefetcher([paths[i] for i in ctx.shard(len(paths))])
    model = build_detector(args.config, args.checkpoint, device=ctx.device,
                           cfg_options=args.cfg_options, unsafe_load=args.unsafe_load)
    if args.fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn
        model = fuse_conv_bn(model)
    predictor = BatchPredictor(model)
    check_merge_for(settings.merge, predictor.detector.box_dim)  # before any image
    runner = LargeImageRunner(predictor, settings, args.out_dir, debug=args.debug,
                              save_patch=args.save_patch,
                              show=show_image if args.show else None,
                              progress=not args.no_progress and ctx.is_main,
                              png_compression=args.png_compression,
                              catch_errors=not os.environ.get(DEBUG_ENV))
    where = f'[rank {ctx.rank}] ' if ctx.distributed else ''

    def report(record: Dict) -> None:
        print(f'{where}skipped {record["path"]}: {record["error"]}', file=sys.stderr,
              flush=True)

    documents = run_job(runner, paths, names, ctx, prefetcher, on_failure=report)
    if documents is None:  # not rank 0
        return None
    doc, full = documents
    print(f'{len(doc["annotations"])} boxes on {len(doc["images"])} image(s) written to '
          f'{args.out_dir}')
    if args.ann_file:
        evaluation = evaluate_documents(args.ann_file, doc, full, runner.class_names,
                                        args.out_dir)
        print(f'COCO box mAP against {args.ann_file}: {len(evaluation.images)} image(s), '
              f'{evaluation.num_gt} ground-truth boxes, score > {settings.score_thr}')
        print(evaluation.table())
    failed = doc.get('failed', [])
    if failed:
        print(f'{len(failed)} of {len(paths)} image(s) failed (listed under "failed" in '
              f'{os.path.join(args.out_dir, "detections.json")}):', file=sys.stderr)
        for item in failed:
            print(f'  {item["path"]}: {item["error"]}', file=sys.stderr)
    return doc


def infer(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> Dict:
    """The tool in-process: what ``main`` does, returning the ``detections.json`` content."""
    return run_tool(build_parser(prog), run, argv)


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> None:
    """The command line (``tools/large_image_infer.py``, ``mmyolo-sliced``). Exit codes: 0,
    2 for bad arguments (nothing done), 3 when some images failed (the others are written;
    the failed ones are listed on stderr and under ``failed`` in ``detections.json``)."""
    doc = infer(argv, prog)
    if doc is not None and doc.get('failed'):
        sys.exit(FAILED_IMAGES_EXIT_CODE)


if __name__ == '__main__':
    main()

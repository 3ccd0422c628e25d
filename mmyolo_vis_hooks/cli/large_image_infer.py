"""Sliced inference on large images with an MMYOLO detector.

The flags of MMYOLO's ``demo/large_image_demo.py`` (image or folder, config, checkpoint,
``--patch-size``, ``--patch-overlap-ratio``, ``--merge-iou-thr``, ``--merge-nms-type``,
``--batch-size``, ``--debug``, ``--save-patch``, ``--score-thr``, ``--out-dir``, ``--show``,
``--device``), plus sahi's merge choices (``--merge-nms-type nms|nmm|greedynmm`` next to
MMYOLO's ``soft_nms``, ``--merge-metric IOU|IOS``), ``--class-agnostic``, ``--full-image``,
``--fuse-conv-bn``, ``--cfg-options``, ``--unsafe-load`` and ``--png-compression``.

Writes to ``--out-dir``: ``<name>`` (the image with the merged boxes), ``detections.json``
(COCO-style: images, categories with id = label + 1, annotations with scores), and with
``--debug`` ``<stem>_debug.png`` (slice grid + unmerged boxes), with ``--save-patch``
``patches/<stem>/<stem>_<index>_<x>_<y>.png`` (each slice with its own boxes).

Example::

    python tools/large_image_infer.py data/large/large_00000.png \\
        configs/demo/yolov5_n_shapes.py tests/assets/yolov5_n_shapes.pth \\
        --batch-size 8 --class-agnostic --out-dir outputs/large
"""
import argparse
from typing import Dict, Optional, Sequence

from mmengine.config import DictAction

from ..engine.slicing import BatchPredictor, MergeConfig, SliceSettings
from ..runtime.images import list_images
from ..runtime.large_image import ImagePrefetcher, LargeImageRunner, output_names
from ..runtime.memory import keep_freed_memory
from ..runtime.models import build_detector
from .common import ToolArgumentParser, run_tool, show_image

MERGE_TYPES = ('nms', 'soft_nms', 'nmm', 'greedynmm')


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = ToolArgumentParser(
        prog=prog,
        description='Sliced (tiled) inference on large images with an MMYOLO detector.')
    parser.add_argument('img', help='image file, folder (searched recursively) or .txt list '
                        'of image paths')
    parser.add_argument('config', help='config file (or mmyolo:: name)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='./output', help='output folder')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
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
    return parser


def settings_from_args(args: argparse.Namespace) -> SliceSettings:
    """Checks every slicing argument (ValueError/TypeError) before any work is done."""
    merge = MergeConfig(method=args.merge_nms_type, metric=args.merge_metric,
                        threshold=args.merge_iou_thr, class_agnostic=args.class_agnostic)
    return SliceSettings(patch_size=args.patch_size, overlap_ratio=args.patch_overlap_ratio,
                         batch_size=args.batch_size, score_thr=args.score_thr,
                         full_image=args.full_image, merge=merge)


def run(args: argparse.Namespace) -> Dict:
    settings = settings_from_args(args)
    paths = list_images(args.img)
    names = output_names(args.img, paths)
    keep_freed_memory()
    prefetcher = ImagePrefetcher(paths)  # the first image is read while the model is built
    model = build_detector(args.config, args.checkpoint, device=args.device,
                           cfg_options=args.cfg_options, unsafe_load=args.unsafe_load)
    if args.fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn
        model = fuse_conv_bn(model)
    runner = LargeImageRunner(BatchPredictor(model), settings, args.out_dir, debug=args.debug,
                              save_patch=args.save_patch,
                              show=show_image if args.show else None,
                              progress=not args.no_progress,
                              png_compression=args.png_compression)
    doc = runner.run(paths, names, prefetcher)
    print(f'{len(doc["annotations"])} boxes on {len(paths)} image(s) written to {args.out_dir}')
    return doc


def infer(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> Dict:
    """The tool in-process: what ``main`` does, returning the ``detections.json`` content."""
    return run_tool(build_parser(prog), run, argv)


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> None:
    """The command line (``tools/large_image_infer.py``, ``mmyolo-sliced``)."""
    infer(argv, prog)


if __name__ == '__main__':
    main()

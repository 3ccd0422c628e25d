"""What every command-line tool shares: one way to fail, argument groups with MMYOLO's flag
names, the layer preview and ``--show``.

One way to fail: bad arguments, missing files and refused checkpoints end in ONE line
``<tool>: error: <what was wrong and what is accepted>`` on stderr and exit code 2 (argparse's
convention), never a traceback. ``MMYOLO_VIS_DEBUG=1`` shows the traceback instead.
"""
import argparse
import os
import re
import sys
from typing import Callable, Optional, Sequence

from mmengine.config import DictAction

from ..engine.core.devices import default_device
from ..engine.core.pipeline import ALIGN_MODES, config_input_size
from ..runtime.checkpoint import UnsafeCheckpointError
from ..runtime.tiff import MissingPackageError

DEBUG_ENV = 'MMYOLO_VIS_DEBUG'
# What a user's input can cause: reported in one line. Anything else is a bug: traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
               PermissionError, UnsafeCheckpointError, MissingPackageError)


class ToolArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``<prog>: error: <message>``, exit 2."""

    def error(self, message: str):
        fail(self.prog, message)


def fail(prog: str, message: str) -> None:
    """Prints ``<prog>: error: <message>`` (one line) on stderr and exits with code 2."""
    text = ' '.join(str(message).split())
    print(f'{prog}: error: {text}', file=sys.stderr)
    sys.exit(2)


def run_tool(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], object],
             argv: Optional[Sequence[str]] = None):
    """Parses ``argv`` and runs ``main(args)``; a user error ends in one line and exit 2.

    Returns:
        What ``main`` returns.
    """
    args = parser.parse_args(argv)
    if 'device' in args and args.device is None:  # add_device_arg's default
        args.device = default_device()
    try:
        return main(args)
    except USER_ERRORS as err:
        if os.environ.get(DEBUG_ENV):
            raise
        fail(parser.prog, str(err) or type(err).__name__)
    except RuntimeError as err:
        message = missing_kernel_message(err)
        if message is None or os.environ.get(DEBUG_ENV):
            raise
        fail(parser.prog, message)


# mmcv's dispatcher, for an op compiled without a kernel for the tensors' device
_MISSING_KERNEL = re.compile(r'(\w+?)(?:_forward|_backward)?_impl: implementation for device '
                             r'(\w+) not found')


def missing_kernel_message(err: RuntimeError) -> Optional[str]:
    """The one line for mmcv's "implementation for device cpu not found" (a model whose op
    has no kernel for the device it runs on: guided anchoring's masked convolution, CARAFE,
    deformable RoI pooling on the CPU), or None for any other RuntimeError (a bug: traceback).
    """
    match = _MISSING_KERNEL.search(str(err))
    if match is None:
        return None
    op, device = match.groups()
    return (f'the model runs mmcv\'s {op} op, which has no {device.upper()} kernel in mmcv '
            f'(the config is valid; this device cannot run it): run on a CUDA device '
            f'(--device cuda:0) where the op has one')


def device_arg(value: str) -> str:
    """``--device``: a device torch knows (``cpu``, ``cuda``, ``cuda:1``, ...); a CUDA device
    only where CUDA is available, checked before any model is built."""
    import torch
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f'unknown device {value!r}; e.g. cpu, cuda or cuda:0') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f'{value}: CUDA is not available on this machine; use --device cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f'{value}: this machine has {torch.cuda.device_count()} CUDA device(s)')
    return value


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--device', type=device_arg, default=None,
                        help='device, e.g. cpu or cuda:0 (default: cuda:0 when CUDA is '
                        'available, else cpu)')


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """config, checkpoint, --device, --cfg-options, --unsafe-load."""
    parser.add_argument('config', help='config file, or mmyolo::<path> / mmdet::<path> of a '
                        'config shipped with MMYOLO / MMDetection')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file; random weights when omitted')
    add_device_arg(parser)
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default={},
        help='override config settings (key=value, xxx.yyy=zzz); applied to the config the '
        'model is built from')
    parser.add_argument(
        '--unsafe-load', action='store_true',
        help='load a checkpoint holding arbitrary pickled objects (runs code from the file; only '
        'for files you trust). By default torch.load(weights_only=True) with an allow-list')


def add_align_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--align', choices=ALIGN_MODES, default='letterbox',
        help='letterbox: invert the letterbox from each image\'s metadata (default); resize: '
        'run the test pipeline with its letterbox steps replaced by a plain resize')


def add_preview_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--preview-model', action='store_true',
        help='print every layer path usable in --target-layers with its output shape(s) and '
        'parameter count, then exit')
    parser.add_argument('--preview-depth', type=int, default=None,
                        help='with --preview-model: deepest nesting level printed')


def print_layer_preview(model, input_size=None, max_depth=None) -> None:
    """Prints the layer preview table of ``engine.core.layers.describe_layers``."""
    from ..engine.core.layers import describe_layers
    input_size = config_input_size(model.cfg) if input_size is None else input_size
    rows = describe_layers(model, (1, 3, input_size[1], input_size[0]), max_depth)
    width = max(len('  ' * depth + name) for name, depth, _, _ in rows)
    print(f'Layers of {type(model).__name__} for a 1x3x{input_size[1]}x{input_size[0]} input '
          f'(usable as --target-layers):')
    print(f'{"layer":<{width}}  {"output shape(s)":<40}  params')
    for name, depth, shapes, params in rows:
        print(f'{"  " * depth + name:<{width}}  {shapes:<40}  {params:,}')


def show_image(window: str, rgb) -> bool:
    """``--show``: the RGB picture in a window until a key is pressed. Without a display (no
    ``DISPLAY`` on Linux) or with an OpenCV built without GUI support, says so on stderr and
    returns False instead of failing: the picture is written to disk either way."""
    import cv2
    if sys.platform.startswith('linux') and not os.environ.get('DISPLAY'):
        print(f'--show: no display (DISPLAY is unset); {window} not shown', file=sys.stderr)
        return False
    try:
        cv2.imshow(window, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.waitKey(0)
        cv2.destroyWindow(window)
    except cv2.error as err:
        print(f'--show: OpenCV cannot open a window ({str(err).strip().splitlines()[-1]}); '
              f'{window} not shown', file=sys.stderr)
        return False
    return True


def add_drise_args(parser: argparse.ArgumentParser) -> None:
    """The D-RISE flags (``--num-masks``, ``--grid-size``, ``--keep-prob``, ``--mask-seed``,
    ``--drise-similarity``, ``--mask-sampling``);
    :func:`drise_options` turns them into BoxCAM's keyword arguments."""
    parser.add_argument('--num-masks', type=int, default=1000,
                        help='D-RISE: random masks per image (one masked forward each)')
    parser.add_argument('--grid-size', type=int, default=16,
                        help='D-RISE: cells per side of the low-resolution mask grid')
    parser.add_argument('--keep-prob', type=float, default=0.5,
                        help='D-RISE: probability that a grid cell is kept, in (0, 1)')
    parser.add_argument('--mask-seed', type=int, default=0,
                        help='D-RISE: seed of the masks (the same masks for every image)')
    parser.add_argument('--drise-similarity', default='box', choices=['box', 'mask'],
                        help='D-RISE: match the masked image\'s predictions by box IoU (every '
                        'candidate) or by instance-mask IoU (its final detections; '
                        'instance-segmentation detectors)')
    parser.add_argument('--mask-sampling', default='balanced', choices=['balanced', 'random'],
                        help="D-RISE: 'balanced' masks (each drawn as the paper's, in balanced "
                        "blocks: the same map with less noise) or the paper's independent "
                        "'random' ones")


def drise_options(args: argparse.Namespace) -> dict:
    """The D-RISE options of the command line, as BoxCAM takes them."""
    return dict(num_masks=args.num_masks, grid_size=args.grid_size, keep_prob=args.keep_prob,
                mask_seed=args.mask_seed, drise_similarity=args.drise_similarity,
                mask_sampling=args.mask_sampling)

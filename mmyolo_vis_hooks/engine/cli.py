"""Argument pieces shared by the offline tools (same flag names as MMYOLO's demos)."""
import argparse

from mmengine.config import DictAction

from .align import ALIGN_MODES


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """config, checkpoint, --device, --cfg-options, --unsafe-load."""
    parser.add_argument('config', help='config file (or mmyolo::<path> of a packaged config)')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file; random weights when omitted')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
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


def print_layer_preview(model, input_size, max_depth=None) -> None:
    """Prints the layer preview table of ``engine.layers.describe_layers``."""
    from .layers import describe_layers
    rows = describe_layers(model, (1, 3, input_size[1], input_size[0]), max_depth)
    width = max(len('  ' * depth + name) for name, depth, _, _ in rows)
    print(f'Layers of {type(model).__name__} for a 1x3x{input_size[1]}x{input_size[0]} input '
          f'(usable as --target-layers):')
    print(f'{"layer":<{width}}  {"output shape(s)":<40}  params')
    for name, depth, shapes, params in rows:
        print(f'{"  " * depth + name:<{width}}  {shapes:<40}  {params:,}')


def input_size_of(cfg) -> tuple:
    """(w, h) of the network input, from the config's test pipeline."""
    for step in cfg.get('test_pipeline', cfg.get('val_dataloader', {}).get(
            'dataset', {}).get('pipeline', [])):
        if 'scale' in step:
            scale = step['scale']
            return (scale, scale) if isinstance(scale, int) else tuple(scale)
    return (640, 640)

"""Which configs the tools and hooks can run, decided by reading the config before any model is
built, and the failures of a build turned into one sentence.

Many files under MMYOLO's and MMDetection's ``configs/`` are no image detector, or need more
than MMDetection: deployment and test-time-augmentation snippets and ``_base_`` files hold no
model; distillation configs build a teacher and a student; trackers are video models;
text-grounded detectors (GLIP, Grounding DINO) download BERT; rotated and pose configs need
mmrotate or mmpose. :func:`check_config` names what the config is and what to pass or install
instead, raising :class:`UnsupportedConfigError` (a ValueError, so every tool reports it in
one line). :func:`read_config` does the same when a config cannot even be read (an ``mmrazor::``
base without mmrazor), and :func:`build_errors_explained` for what only the build finds (a
type no package registers, a download while offline).
"""
import ast
import contextlib
import copy
import importlib
import importlib.util
import os.path as osp
import re
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config

from ..requirements import INSTALL_HINT as MMYOLO_INSTALL_HINT
from ..requirements import mmyolo_available


class UnsupportedConfigError(ValueError):
    """A config the tools and hooks cannot run; the message says what it is and what to do.

    Args:
        message (str): One sentence: what the config is, what to pass or install instead.
        reason (str): Which kind of refusal, one of :data:`REASONS`.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# The kinds of refusal (``UnsupportedConfigError.reason``).
REASONS = ('no model', 'deployment', 'test-time augmentation', 'partial model',
           'classification', 'distillation', 'video/tracking', 're-identification',
           'text-grounded', 'precomputed proposals', 'semi-supervised', 'panoptic-only',
           'missing package', 'unregistered type',
           'download')

# How to get an optional package next to torch 2.14 / mmcv 2.1 / mmdet 3.3, each command tried
# in a venv on top of this stack (the distributions' own version asserts at import decide).
INSTALL_HINTS = {
    'mmyolo': f'MMYOLO: {MMYOLO_INSTALL_HINT}',
    # mmrotate==1.0.0rc1, the only mmrotate 1.x release, asserts mmdet<3.1 at import.
    'mmrotate': 'mmrotate 1.x: pip install mmrotate-dev==1.0.1 (mmrotate\'s dev-1.x branch; '
                'mmrotate==1.0.0rc1 asserts mmdet<3.1)',
    # xtcocotools' PyPI wheel is built for numpy 1: under numpy 2 its import raises
    # "numpy.dtype size changed", and MMYOLO's models (which try mmpose) stop importing too.
    'mmpose': 'mmpose 1.x: pip install mmpose==1.3.2 --no-binary xtcocotools (xtcocotools\' '
              'wheel is built for numpy 1 and fails to import under numpy 2)',
    # mmrazor==1.0.0 installs and imports, but its models import torch.ao.quantization helpers
    # (fuser_method_mappings.reverse2, ...) that torch 2.14 no longer has.
    'mmrazor': 'mmrazor 1.x, which cannot run on this torch: mmrazor==1.0.0, the last release, '
               'fails to import its models on torch 2.14 (torch.ao.quantization helpers it '
               'imports are gone); MMRazor configs are not supported here',
    'mmpretrain': 'mmpretrain: pip install mmpretrain==1.2.0',
    # mmcls 1.0.0rc6, the last mmcls 1.x, asserts mmcv<2.1.0; mmpretrain is its successor.
    'mmcls': 'mmcls 1.x: pip install mmcls==1.0.0rc6 (it asserts mmcv<2.1.0; with mmcv 2.1 '
             'use mmpretrain==1.2.0, mmcls\'s successor, and write its types as mmpretrain.*)',
    'lap': 'lap: pip install lap',
    'timm': 'timm: pip install timm',
    'transformers': 'transformers: pip install transformers',
    'detectron2': 'detectron2, which is not on PyPI: build it from '
                  'https://github.com/facebookresearch/detectron2',
}

# Keys of an MMDeploy config and of a test-time-augmentation snippet (files without a model).
DEPLOY_KEYS = ('codebase_config', 'backend_config', 'onnx_config')
TTA_KEYS = ('tta_model', 'tta_pipeline')
# Model keys that only distillation builds: a teacher, its checkpoint, MMRazor's distiller.
DISTILL_KEYS = ('teacher_config', 'teacher_ckpt', 'teacher', 'distiller')
# Video/tracking types, for when their class cannot be resolved (the package is missing).
VIDEO_TYPES = ('ByteTrack', 'OCSORT', 'QDTrack', 'DeepSORT', 'StrongSORT', 'MaskTrackRCNN',
               'Mask2FormerVideo', 'SORT')
_URL = re.compile(r'^(https?|ftp)://')


def config_name(cfg: Config) -> str:
    """The config's file name for messages (``'the config'`` when built in memory)."""
    return osp.basename(cfg.filename) if cfg.filename else 'the config'


def missing_package_error(package: str, needed_by: str) -> UnsupportedConfigError:
    """The refusal for an absent package, with how to install it.

    Args:
        package (str): Top-level module name, e.g. ``'mmrotate'``.
        needed_by (str): What needs it, e.g. ``'rtmdet-r_l_...py (default_scope mmrotate)'``.
    """
    hint = INSTALL_HINTS.get(package, f'{package}: pip install {package}')
    return UnsupportedConfigError(f'{needed_by} needs {hint}', 'missing package')


def is_importable(module: str) -> bool:
    """Whether the top-level package of ``module`` can be found (without importing it)."""
    top = module.split('.')[0]
    if top == 'mmyolo':
        return mmyolo_available()  # a broken MMYOLO raises its own clear ImportError
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


# ------------------------------------------------------------------ reading a config file
def read_config(path: str) -> Config:
    """``Config.fromfile`` that refuses in one sentence what cannot be read here.

    Raises:
        FileNotFoundError: No such file, or a ``_base_`` file of it is missing.
        UnsupportedConfigError: The config inherits from (``pkg::`` bases) or imports
            (``custom_imports``) a package that is not installed; the refusal names what the
            config is (a classification or distillation config says so) and how to get it.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    try:
        return Config.fromfile(path, format_python_code=False)
    except FileNotFoundError as err:
        raise FileNotFoundError(f'{osp.basename(path)} inherits a config file that does not '
                                f'exist: {err.filename or err}') from None
    except ImportError as err:
        missing = _missing_module(err)
        if not missing:
            raise
        refusal = _refusal_from_source(path)
        if refusal is not None:
            raise refusal from None
        package, via = missing
        raise missing_package_error(package, f'{osp.basename(path)} ({via})') from None


def _missing_module(err: BaseException) -> Optional[Tuple[str, str]]:
    """``(package, how the config names it)`` for the package whose absence caused ``err``
    (an ImportError, maybe raised from one), or None: ``pkg::`` bases raise "mmrazor is not
    installed, ..."; a failed custom import wraps the ModuleNotFoundError naming the module."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ModuleNotFoundError):
            match = re.match(r'(\w+) is not installed', str(err))
            if match:
                return match.group(1), f'its _base_ inherits {match.group(1)}:: configs'
            if err.name:
                return err.name.split('.')[0], f'custom_imports {err.name}'
        err = err.__cause__ or err.__context__
    return None


def _refusal_from_source(path: str) -> Optional[UnsupportedConfigError]:
    """What a config that cannot be read is, from the ``model = dict(type=...)`` of its own
    source or of the local files it inherits."""
    model = _source_model(path)
    if not model:
        return None
    return _kind_refusal(model, model.get('_scope_') or default_scope(), osp.basename(path))


def _source_model(path: str, depth: int = 0) -> Optional[dict]:
    """The literal part of ``model = dict(...)`` in a config's source (nested ``dict(...)``
    included, other expressions as None), following local ``_base_`` files until one gives
    the model a type."""
    try:
        tree = ast.parse(open(path, encoding='utf-8').read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    assigned = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned[target.id] = _literal(node.value)
    model = assigned.get('model')
    if isinstance(model, dict) and model.get('type'):
        return model
    bases = assigned.get('_base_')
    for base in [bases] if isinstance(bases, str) else bases or []:
        if isinstance(base, str) and '::' not in base and depth < 8:
            found = _source_model(osp.join(osp.dirname(path), base), depth + 1)
            if found:
                return found
    return None


def _literal(node):
    """A config expression as a Python value where it is literal: constants, lists, tuples,
    ``dict(...)`` and ``{...}``; anything else (names, arithmetic) as None."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict':
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
    return None


# ------------------------------------------------------------------ analysis before building
def check_config(cfg: Config) -> None:
    """Raises :class:`UnsupportedConfigError` if the config is no image detector the tools can
    build here; returns None for a config worth building. Builds nothing.

    Raises:
        UnsupportedConfigError: With ``reason`` one of :data:`REASONS`.
    """
    refusal = classify_config(cfg)
    if refusal is not None:
        raise refusal


def classify_config(cfg: Config) -> Optional[UnsupportedConfigError]:
    """The refusal :func:`check_config` would raise, or None. Builds nothing."""
    name = config_name(cfg)
    model = cfg.get('model')
    if model is None:
        return _no_model_refusal(cfg, name)
    if not isinstance(model, dict) or not model.get('type'):
        return UnsupportedConfigError(
            f'{name} is a partial base config: its model has no type (it sets '
            f'{sorted(model)[:4] if isinstance(model, dict) else type(model).__name__}); pass '
            f'a full model config that inherits it', 'partial model')
    scope = config_scope(cfg)
    refusal = _kind_refusal(model, scope, name)
    if refusal is not None:
        return refusal
    for module, needed_by in _needed_packages(cfg, model, scope, name):
        if not is_importable(module):
            return missing_package_error(module.split('.')[0], needed_by)
    refusal = _unregistered_type(model, scope, name)
    if refusal is None and not ((cfg.get('test_dataloader') or {}).get('dataset', {}).get(
            'pipeline') or cfg.get('test_pipeline')):
        return UnsupportedConfigError(
            f'{name} has a model but no test pipeline (test_dataloader.dataset.pipeline or '
            f'test_pipeline), as a _base_ model file: the tools load and resize images '
            f'through it; pass a full config that inherits it', 'partial model')
    return refusal


def default_scope() -> str:
    """The registry scope of a config without ``default_scope`` whose model type says nothing:
    MMYOLO's where it is installed (the project's configs), else MMDetection's."""
    return 'mmyolo' if mmyolo_available() else 'mmdet'


def config_scope(cfg: Config) -> str:
    """The registry scope to build ``cfg`` in: its ``default_scope``; without one (MMDetection's
    ``_base_/models`` files, a user's own config), the first of MMYOLO and MMDetection whose
    registries know the model's type, else :func:`default_scope`."""
    if cfg.get('default_scope'):
        return cfg.default_scope
    model = cfg.get('model')
    type_ = model.get('type') if isinstance(model, dict) else None
    if isinstance(type_, str):
        for scope in ('mmyolo', 'mmdet'):
            if is_importable(scope) and _resolve(type_, scope) is not None:
                return scope
    return default_scope()


def _no_model_refusal(cfg: Config, name: str) -> UnsupportedConfigError:
    keys = [key for key in cfg.keys() if not key.startswith('_')]
    if any(key in cfg for key in DEPLOY_KEYS):
        return UnsupportedConfigError(
            f'{name} is an MMDeploy deployment config (codebase_config/backend_config): it '
            f'holds no model; pass the detector\'s model config, the one given to MMDeploy '
            f'with it (e.g. mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py)',
            'deployment')
    if any(key in cfg for key in TTA_KEYS):
        folder = osp.basename(osp.dirname(cfg.filename)) if cfg.filename else ''
        folder = '' if folder.startswith('_') else folder  # a _base_ file serves every folder
        return UnsupportedConfigError(
            f'{name} is a test-time-augmentation snippet (tta_model/tta_pipeline): it holds no '
            f'model; pass the detector config it is merged into'
            f'{f" (one of {folder}/*.py)" if folder else ""}', 'test-time augmentation')
    return UnsupportedConfigError(
        f'{name} holds no model (it sets {", ".join(keys[:4]) or "nothing"}'
        f'{", ..." if len(keys) > 4 else ""}): a _base_/common file that model configs '
        f'inherit; pass a model config (one that defines model=dict(type=...))', 'no model')


def _type_name(model: dict) -> Tuple[str, str]:
    """``(scope, name)`` of a model dict's type: ``'mmrazor.X'`` -> ``('mmrazor', 'X')``."""
    type_ = model.get('type')
    if not isinstance(type_, str):  # a class object (lazy-import configs)
        return '', getattr(type_, '__name__', str(type_))
    scope, _, name = type_.rpartition('.')
    return scope, name


def model_kind_refusal(cfg: Optional[Config], model) -> Optional[UnsupportedConfigError]:
    """The refusals by kind (:func:`_kind_refusal`) for a model a Runner has built: decided
    from its config's model dict and its class (from the class alone when the Runner was
    given a module instead of a dict).

    Args:
        cfg (Config, optional): The Runner's config.
        model (nn.Module): The built model, unwrapped.
    """
    model_cfg = cfg.get('model') if cfg is not None else None
    if not isinstance(model_cfg, dict):
        model_cfg = {'type': type(model).__name__}
    scope = cfg.get('default_scope') if cfg is not None else None
    name = config_name(cfg) if cfg is not None else 'the config'
    return _kind_refusal(model_cfg, scope or default_scope(), name, type(model))


def _kind_refusal(model: dict, scope: str, name: str,
                  cls: Optional[type] = None) -> Optional[UnsupportedConfigError]:
    """Refusals by what the model is (classifier, distiller, tracker, text-grounded), decided
    from its type and keys alone, so that they hold whether or not the package is installed;
    ``cls``: the model's class when known (else looked up in the registries)."""
    type_scope, type_name = _type_name(model)
    scope = type_scope or model.get('_scope_') or scope
    if cls is None:
        cls = _resolve(f'{type_scope}.{type_name}' if type_scope else type_name,
                       model.get('_scope_') or scope)
    if type_name.endswith('Classifier') or (scope in ('mmcls', 'mmpretrain')
                                            and 'head' in model and 'bbox_head' not in model):
        return UnsupportedConfigError(
            f'{name} is an image classification / backbone pretraining config (model type '
            f'{type_name}): not a detector; pass a detector config that uses this backbone',
            'classification')
    if 'Distill' in type_name or type_name == 'LAD' or any(k in model for k in DISTILL_KEYS):
        student = (model.get('architecture') or {}).get('cfg_path') if isinstance(
            model.get('architecture'), dict) else None
        hint = (f'pass the student\'s own config ({student})' if student else
                'pass a config of the student detector alone (without teacher_config / '
                'teacher_ckpt)')
        return UnsupportedConfigError(
            f'{name} is a distillation config (model type {type_name}: a student trained from '
            f'a teacher, built too from a downloaded checkpoint); feature maps and box CAMs '
            f'explain one detector: {hint}', 'distillation')
    if _is_video_model(cls, type_name, model):
        detector = model.get('detector')
        detector = _type_name(detector)[1] if isinstance(detector, dict) else None
        hint = (f'pass the config of its image detector (model.detector: {detector})'
                if detector else 'pass an image detector config')
        return UnsupportedConfigError(
            f'{name} is a video/tracking model ({type_name}: detections linked across video '
            f'frames): not supported, feature maps and box CAMs explain image detectors; {hint}',
            'video/tracking')
    if type_name == 'BaseReID' or _subclass_of(cls, 'mmdet.models.reid', 'BaseReID'):
        return UnsupportedConfigError(
            f'{name} is a re-identification model ({type_name}: embeddings of object crops '
            f'for trackers): not a detector, not supported', 're-identification')
    if type_name in ('SemiBaseDetector', 'SoftTeacher') or _subclass_of(
            cls, 'mmdet.models.detectors', 'SemiBaseDetector'):
        detector = model.get('detector')
        detector = _type_name(detector)[1] if isinstance(detector, dict) else 'its detector'
        return UnsupportedConfigError(
            f'{name} is a semi-supervised wrapper ({type_name}: a teacher and a student copy of '
            f'one detector, {detector}, with layers under teacher. and student.): not '
            f'supported; explain the detector itself, with a config of {detector} and the '
            f'weights of the teacher or the student', 'semi-supervised')
    test_cfg = model.get('test_cfg') if isinstance(model.get('test_cfg'), dict) else {}
    if type_name == 'PanopticFPN' or _subclass_of(
            cls, 'mmdet.models.detectors', 'TwoStagePanopticSegmentor') or (
            type_name in ('MaskFormer', 'Mask2Former') and not test_cfg.get('instance_on')):
        return UnsupportedConfigError(
            f'{name} is a panoptic segmentation model ({type_name}) that outputs a panoptic '
            f'map and no detected boxes: not supported; box CAMs and feature maps explain '
            f'detectors (for Mask2Former, a config with test_cfg.instance_on=True)',
            'panoptic-only')
    if 'roi_head' in model and not model.get('rpn_head') and (
            type_name == 'FastRCNN' or _subclass_of(cls, 'mmdet.models.detectors',
                                                    'TwoStageDetector')):
        return UnsupportedConfigError(
            f'{name} is a two-stage detector without an RPN ({type_name}): it reads '
            f'precomputed proposals from a proposals file for every image, which the tools '
            f'cannot give; pass a config with an RPN (Faster R-CNN for Fast R-CNN)',
            'precomputed proposals')
    if 'language_model' in model or type_name in ('GLIP', 'GroundingDINO'):
        return UnsupportedConfigError(
            f'{name} is a text-grounded detector ({type_name}): building it needs transformers '
            f'and BERT weights downloaded from the Hugging Face hub, and its boxes depend on a '
            f'text prompt: not supported; pass a closed-set detector config', 'text-grounded')
    return None


def _is_video_model(cls, type_name: str, model: dict) -> bool:
    if cls is not None:
        return _subclass_of(cls, 'mmdet.models.mot', 'BaseMOTModel')
    preprocessor = model.get('data_preprocessor')
    return type_name in VIDEO_TYPES or (isinstance(preprocessor, dict) and _type_name(
        preprocessor)[1] == 'TrackDataPreprocessor')


def _subclass_of(cls, module: str, base: str) -> bool:
    if cls is None or not isinstance(cls, type):
        return False
    try:
        base_cls = getattr(importlib.import_module(module), base)
    except (ImportError, AttributeError):
        return False
    return isinstance(base_cls, type) and base_cls is not object and issubclass(cls, base_cls)


def _needed_packages(cfg: Config, model: dict, scope: str,
                     name: str) -> Iterator[Tuple[str, str]]:
    """``(module, what needs it)`` for every package the config names: its default scope,
    its ``custom_imports``, the wrappers of other frameworks, and the scope prefixes and
    ``_scope_`` keys of its types (the model's first, then the rest: a pose or rotated
    config's evaluator and visualizer name mmpose or mmrotate)."""
    yield scope, f'{name} (default_scope={scope!r})'
    imports = (cfg.get('custom_imports') or {}).get('imports') or []
    for module in [imports] if isinstance(imports, str) else imports:
        yield module, f'{name} (custom_imports {module})'
    rest = {key: value for key, value in cfg.items() if key != 'model'}
    for path, node in [*_walk(model, 'model'), *_walk(rest, '')]:
        path = path.lstrip('.')
        if isinstance(node.get('_scope_'), str):
            yield node['_scope_'], f'{name} ({path}._scope_={node["_scope_"]!r})'
        type_scope, type_name = _type_name(node)
        if type_scope:
            yield type_scope, f'{name} ({path}.type={node["type"]!r})'
        if type_name == 'Detectron2Wrapper':
            yield 'detectron2', f'{name} ({path}: Detectron2Wrapper)'
        if type_name == 'TIMMBackbone':
            yield 'timm', f'{name} ({path}: TIMMBackbone)'


def _walk(node, path: str) -> Iterator[Tuple[str, dict]]:
    """Every dict with a ``type`` inside ``node`` (dicts and lists), with its dotted path."""
    if isinstance(node, dict):
        if 'type' in node:
            yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}[{i}]')


# ------------------------------------------------------------------ registry look-ups
def _scope_registries(scope: str) -> List:
    """Every registry of ``scope`` (models, task utils, weight initializers, ...), whose
    look-ups fall back on MMEngine's roots; MMEngine's roots alone if the scope is unknown."""
    from mmengine import registry as root
    roots = [value for value in vars(root).values() if isinstance(value, root.Registry)]
    if scope:
        with contextlib.suppress(ImportError, AssertionError):
            importlib.import_module(f'{scope}.registry')
    found = []
    for registry in roots:
        child = registry._search_child(scope) if scope else None
        found.append(registry if child is None else child)  # an empty Registry is falsy
    return found


def _resolve(type_name: str, scope: str):
    """The class registered as ``type_name`` (optionally ``pkg.Name``) for ``scope`` in any
    of its registries, or None. Imports the registering modules, as building would."""
    type_scope = type_name.rpartition('.')[0]
    if not is_importable(type_scope or scope or 'mmengine'):
        return None
    for registry in _scope_registries(type_scope or scope):
        with contextlib.suppress(Exception):  # a registry location failing to import
            cls = registry.get(type_name)
            if cls is not None:
                return cls
    return None


def _registering_scopes(type_name: str) -> List[str]:
    """The installed scopes whose registries know ``type_name`` (for a hint)."""
    found = []
    for scope in ('mmdet', 'mmyolo', 'mmpretrain', 'mmrotate', 'mmpose', 'mmrazor'):
        if is_importable(scope) and _resolve(type_name, scope) is not None:
            found.append(scope)
    return found


def _unregistered_type(model: dict, scope: str, name: str) -> Optional[UnsupportedConfigError]:
    """A refusal if no registry of the scope knows the model's own type, naming the installed
    package that registers it if one does. Nested types are left to the build (which
    :func:`build_errors_explained` reports): some are no registry names at all (an RoI
    extractor's ``roi_layer`` type is looked up in ``mmcv.ops``)."""
    type_ = model.get('type')
    node_scope = model.get('_scope_') or scope
    if not isinstance(type_, str) or _resolve(type_, node_scope) is not None:
        return None
    broken = _models_import_error(type_.rpartition('.')[0] or node_scope)
    if broken:  # the registry is empty because its models do not import: say why
        return UnsupportedConfigError(
            f'{name}: model.type={type_!r} cannot be found because {broken}; repair that '
            f'installation', 'broken package')
    return UnsupportedConfigError(
        f'{name}: model.type={type_!r} is not registered in {node_scope}\'s registries; '
        f'{_registered_hint(type_, node_scope)}', 'unregistered type')


def _models_import_error(scope: str) -> Optional[str]:
    """Why ``<scope>.models`` (where a scope's registries find their classes) does not
    import here, in one line; None when it does or the scope has no such module (e.g. a
    binary wheel built for another NumPy, several imports down)."""
    top = (scope or '').split('.')[0]
    if not top or not is_importable(top) or importlib.util.find_spec(f'{top}.models') is None:
        return None
    try:
        importlib.import_module(f'{top}.models')
    except Exception as err:  # noqa: B902 any failure of a package's import is reported
        first = str(err).strip().splitlines()[0] if str(err).strip() else ''
        return f'importing {top}.models fails: {type(err).__name__}: {first}'
    return None


def _registered_hint(type_: str, scope: str) -> str:
    """Which installed package registers ``type_`` and how to name it, or what to do."""
    type_name = type_.rpartition('.')[2]
    elsewhere = [s for s in _registering_scopes(type_name) if s != scope]
    if elsewhere:
        return (f'it is registered by {" and ".join(elsewhere)}: write '
                f'{elsewhere[0]}.{type_name} or set default_scope={elsewhere[0]!r}')
    return ('import the module that registers it with custom_imports = dict(imports=[...]) or '
            'install the package that provides it')


# ------------------------------------------------------------------ building
def explanation_model_cfg(cfg: Config) -> dict:
    """A copy of the config's model for explanation, with what needs training or several
    processes turned off; neither changes a weight's name or value:

    - activation checkpointing (``with_cp=True``): it recomputes activations in the backward
      pass instead of storing them, only saves memory in training, and
      ``torch.autograd.grad`` (what the box CAMs take) fails through it;
    - mmcv's ``MMSyncBN`` becomes ``BN``: it asks for the process group's size when it is
      built, so a single process cannot even build it (``revert_sync_batchnorm`` would turn
      it into BN afterwards; torch's ``SyncBN`` builds and is reverted so).
    """
    model = copy.deepcopy(cfg.model)

    def change(node):
        if isinstance(node, dict):
            if node.get('with_cp') is True:
                node['with_cp'] = False
            if isinstance(node.get('type'), str) and node['type'].rpartition('.')[2] == 'MMSyncBN':
                node['type'] = 'BN'
            for value in node.values():
                change(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                change(value)

    change(model)
    return model


@contextlib.contextmanager
def build_errors_explained(cfg: Config):
    """Turns what only building the model finds into :class:`UnsupportedConfigError`: a type
    no registry knows (mmengine's KeyError), a missing package imported by a model's module,
    a download while offline. Other exceptions pass unchanged (bugs keep their traceback)."""
    name = config_name(cfg)
    try:
        yield
    except UnsupportedConfigError:
        raise
    except (ImportError, RuntimeError) as err:  # ByteTracker: RuntimeError('lap is not ...')
        package = _package_named_by(err)
        if not package or is_importable(package):
            raise
        raise missing_package_error(package, f'{name} (building its model imports {package})'
                                    ) from err
    except (KeyError, AssertionError) as err:
        # mmengine re-raises with the failing class in front; a KeyError's str() quotes.
        match = re.search(r'([\w.]+) is not in the (\w+)::(\w+) registry', str(err))
        if not match:
            raise
        raise UnsupportedConfigError(
            f'{name}: type {match.group(1)!r} is not registered in the {match.group(2)} '
            f'{match.group(3)} registry; {_registered_hint(match.group(1), match.group(2))}',
            'unregistered type') from err
    except OSError as err:
        if not _is_network_error(err):
            raise
        urls = [url for _, url in _urls(cfg.get('model'), 'model')]
        where = f' ({", ".join(urls[:2])})' if urls else ''
        raise UnsupportedConfigError(
            f'building the model of {name} downloads files{where} and this machine has no '
            f'network ({type(err).__name__}: {err}); download them elsewhere and point the '
            f'config at local copies', 'download') from err


def _package_named_by(err: Exception) -> Optional[str]:
    """The missing package behind an error of a build: the module of a ModuleNotFoundError
    (MMEngine re-raises it with its class in front, which drops ``name``), or an optional
    package the message tells to install (mmyolo's OksLoss: 'Please run "mim install -r
    requirements/mmpose.txt"'; mmdet's ByteTracker: 'lap is not installed, please install
    it by: pip install lap')."""
    missing = _missing_module(err)
    if missing:
        return missing[0]
    text = str(err)
    match = re.search(r"No module named '([\w.]+)'", text)
    if match:
        return match.group(1).split('.')[0]
    if 'install' not in text:
        return None
    return next((package for package in INSTALL_HINTS
                 if re.search(rf'\b{package}\b', text) and not is_importable(package)), None)


def _is_network_error(err: BaseException) -> bool:
    import socket
    import urllib.error
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (urllib.error.URLError, socket.gaierror, ConnectionError,
                            TimeoutError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def _urls(node, path: str) -> Iterator[Tuple[str, str]]:
    """Remote files a model config names outside ``init_cfg`` (which building never loads)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != 'init_cfg':
                yield from _urls(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _urls(value, f'{path}[{i}]')
    elif isinstance(node, str) and _URL.match(node):
        yield path, node


def classify_file(path: str) -> Optional[UnsupportedConfigError]:
    """Reads a config file and classifies it (nothing built): the refusal, or None when the
    config is worth building. For the refusal census (``benchmarks/refusal_sweep.py``)."""
    try:
        cfg = read_config(path)
    except UnsupportedConfigError as err:
        return err
    return classify_config(cfg)


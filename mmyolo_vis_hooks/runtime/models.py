"""Building a detector for offline tools: config (+ overrides) and a checkpoint, loaded safely."""
import importlib
import os.path as osp
from typing import Callable, Dict, Optional, Union

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..engine.core.devices import resolve_device
from ..engine.core.pipeline import (ANNOTATION_LOADING, check_align, resize_only_pipeline,
                                    test_pipeline_cfg, transform_type)
from .checkpoint import load_checkpoint_file, state_dict_of
from .config_check import (build_errors_explained, check_config, config_scope,
                           explanation_model_cfg, is_importable, missing_package_error,
                           read_config)

# Meta keys a test pipeline may pack that only a dataset's annotations give (PoseCocoDataset's
# instance id and keypoint flip indices), left out when loading a bare image.
ANNOTATION_META_KEYS = ('id', 'flip_indices')
# ``<package>::<path>``: a config shipped inside an installed package (``.mim/configs``).
CONFIG_PACKAGES = ('mmyolo', 'mmdet')


def packaged_config_path(name: str) -> str:
    """The file of ``mmyolo::<path>`` or ``mmdet::<path>`` (what mmengine resolves only in
    ``_base_``); other names are returned unchanged.

    Raises:
        UnsupportedConfigError: The package is not installed (how to get it).
    """
    package, sep, relpath = name.partition('::')
    if not sep or package not in CONFIG_PACKAGES:
        return name
    if not is_importable(package):
        raise missing_package_error(package, name)
    module = importlib.import_module(package)
    return osp.join(osp.dirname(module.__file__), '.mim', 'configs', relpath)


def initialize_without_downloads(model: torch.nn.Module) -> None:
    """Random weights for a model built without a checkpoint: ``init_weights`` with the
    ``Pretrained`` entries dropped (nothing is downloaded). Parameters that MMDetection creates
    uninitialized (DETRs' ``torch.Tensor(...)`` level embeddings, Sparse R-CNN's proposal
    boxes) get their documented random init, TridentNet's TridentConv weights ResNet's conv
    init, instead of whatever memory held (NaN once deterministic algorithms are on: PyTorch
    then fills uninitialized memory with NaN).
    mmengine's per-parameter init report is kept out of the log."""
    from mmengine.logging import MMLogger

    def pretrained(entry) -> bool:  # PVT's init_cfg names only the checkpoint, no type
        return isinstance(entry, dict) and (entry.get('type') == 'Pretrained'
                                            or 'checkpoint' in entry)
    for module in model.modules():
        if isinstance(getattr(module, 'pretrained', None), str):
            module.pretrained = None  # DetectoRS' ResNet loads its `pretrained` in init_weights
        cfg = getattr(module, 'init_cfg', None)
        if pretrained(cfg):
            module.init_cfg = None
        elif isinstance(cfg, list):
            module.init_cfg = [entry for entry in cfg if not pretrained(entry)]
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    from mmengine.model import kaiming_init
    for module in model.modules():
        # TridentNet's TridentConv: an uninitialized weight no init_cfg reaches (no Conv2d)
        if type(module).__name__ == 'TridentConv':
            kaiming_init(module, mode='fan_out', nonlinearity='relu', distribution='normal')


def load_config(config: Union[str, Config], cfg_options: Optional[Dict] = None) -> Config:
    """Reads a config (a path, ``mmyolo::``/``mmdet::`` name or ``Config``) and merges
    ``cfg_options``.

    The options are merged into the config the model is then built from, so they really reach
    the model (MMYOLO's demos merge them into a copy and build from the path).

    Raises:
        FileNotFoundError: No such config file.
        UnsupportedConfigError: The file cannot be read here (a ``pkg::`` base or a
            custom import of a package that is not installed), with what to do.
    """
    if isinstance(config, Config):
        cfg = config.copy()
    else:
        cfg = read_config(packaged_config_path(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_detector(config: Union[str, Config], checkpoint: Optional[str] = None,
                   device: Optional[str] = None, cfg_options: Optional[Dict] = None,
                   unsafe_load: bool = False, init_weights: bool = False) -> torch.nn.Module:
    """Builds an MMYOLO or MMDetection detector in eval mode, optionally with weights.

    The config is checked before anything is built (``config_check.check_config``): a file
    that holds no detector, or needs a package that is not installed, is refused in one
    sentence saying what to pass or install. Activation checkpointing (``with_cp``) is turned
    off (it breaks the gradients of the box CAMs) and SyncBN becomes BN (one process); neither
    changes a weight (``config_check.explanation_model_cfg``). MMYOLO is imported only for
    configs in its scope.

    Args:
        config (str | Config): Config path, ``mmyolo::``/``mmdet::`` name or object.
        checkpoint (str, optional): Checkpoint path; random init when None.
        device (str, optional): Device; None means cuda:0 where CUDA is available, else
            cpu (``core.devices.default_device``). Defaults to None.
        cfg_options (dict, optional): Overrides merged into the config before building.
        unsafe_load (bool): Allow unpickling arbitrary objects. Defaults to False.
        init_weights (bool): Without a checkpoint, give the model the documented random init
            that training starts from (:func:`initialize_without_downloads`) instead of the
            constructors' alone, which leave some parameters uninitialized memory (DETRs'
            level embeddings, Sparse R-CNN's proposals). The tools set it. Defaults to False.

    Returns:
        nn.Module: The model, with ``model.cfg`` and ``model.dataset_meta`` set.

    Raises:
        UnsupportedConfigError: A config the tools cannot run (``reason`` says which kind).
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS

    cfg = load_config(config, cfg_options)
    check_config(cfg)
    init_default_scope(config_scope(cfg))
    with build_errors_explained(cfg):
        model = revert_sync_batchnorm(MODELS.build(explanation_model_cfg(cfg)))
    meta = None
    if not checkpoint and init_weights:
        initialize_without_downloads(model)
    if checkpoint:
        ckpt = load_checkpoint_file(checkpoint, 'cpu', unsafe_load=unsafe_load)
        missing, unexpected = model.load_state_dict(state_dict_of(ckpt, checkpoint), strict=False)
        if missing:
            raise ValueError(f'checkpoint {checkpoint} does not fit the config: missing '
                             f'{len(missing)} keys, e.g. {missing[:3]}')
        meta = ckpt.get('meta', {}).get('dataset_meta') if isinstance(ckpt, dict) else None
    if meta is None:
        dataset_cfg = cfg.get('test_dataloader', cfg.get('val_dataloader', {})).get('dataset', {})
        meta = dict(dataset_cfg.get('metainfo', {}))
    model.cfg = cfg
    model.dataset_meta = meta
    return model.to(resolve_device(device)).eval()


def build_image_loader(cfg: Config, align: str = 'letterbox') -> Callable[[str, int], dict]:
    """A function ``(img_path, img_id) -> batch of one`` for the offline tools.

    It runs the config's test pipeline (annotation loading removed), or with ``align='resize'``
    its resize-only variant (``engine.core.pipeline.resize_only_pipeline``), and collates
    the result.
    """
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate

    check_align(align)
    steps = [s for s in test_pipeline_cfg(cfg) if transform_type(s) not in ANNOTATION_LOADING]
    for step in steps:
        if step.get('meta_keys') is not None:
            # YOLOX-pose packs keys only its dataset's annotations give, which MMYOLO's
            # PackDetInputs asserts are present: a bare image has none of them.
            step['meta_keys'] = tuple(k for k in step['meta_keys']
                                      if k not in ANNOTATION_META_KEYS)
    if align == 'resize':
        steps = resize_only_pipeline(steps)
    pipeline = Compose(steps)

    def load(img_path: str, img_id: int = 0) -> dict:
        return pseudo_collate([pipeline(dict(img_path=img_path, img_id=img_id))])
    return load

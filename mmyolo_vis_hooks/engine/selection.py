"""A fixed, reproducible choice of images and their loading through a test pipeline."""
import copy
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class SampleRef:
    """One chosen image: its dataset index, path and a short stable name for tags."""
    index: int
    img_path: str
    name: str


def check_selection(num_images: int, img_indices: Optional[Sequence[int]]) -> None:
    """Raises ValueError for selection arguments that can never work, before any data is read."""
    if img_indices is not None:
        if (isinstance(img_indices, (str, bytes)) or not isinstance(img_indices, Sequence)
                or not img_indices):
            raise ValueError(f'img_indices must be a non-empty list of ints, got {img_indices!r}')
        for i in img_indices:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ValueError(f'img_indices must hold non-negative ints, got {i!r}')
    elif isinstance(num_images, bool) or not isinstance(num_images, int) or num_images <= 0:
        raise ValueError(f'num_images must be a positive int, got {num_images!r}')


def select_indices(dataset_size: int, num_images: int = 4,
                   img_indices: Optional[Sequence[int]] = None, seed: int = 0) -> List[int]:
    """Indices of the images to visualize: ``img_indices`` as given, else ``num_images`` drawn
    with ``seed`` (the same every epoch and every run).

    Raises:
        ValueError: An index is out of range, or the dataset is empty.
    """
    check_selection(num_images, img_indices)
    if dataset_size <= 0:
        raise ValueError('the validation dataset is empty: nothing to visualize')
    if img_indices is not None:
        bad = [i for i in img_indices if i >= dataset_size]
        if bad:
            raise ValueError(f'img_indices {bad} out of range: the validation dataset has '
                             f'{dataset_size} images (valid indices 0..{dataset_size - 1})')
        return list(dict.fromkeys(img_indices))
    count = min(num_images, dataset_size)
    return sorted(np.random.default_rng(seed).choice(dataset_size, count, replace=False).tolist())


def sample_refs(dataset, indices: Sequence[int]) -> List[SampleRef]:
    """``SampleRef`` for each index of an MMEngine ``BaseDataset`` (metadata only, no pixels)."""
    refs = []
    for index in indices:
        info = dataset.get_data_info(index)
        path = info.get('img_path')
        if path is None:
            raise ValueError(f'dataset item {index} has no img_path')
        refs.append(SampleRef(index, path, osp.splitext(osp.basename(path))[0]))
    return refs


def load_through_pipeline(dataset, index: int, pipeline: Callable[[Dict], Dict]) -> Dict:
    """Runs one raw dataset item through ``pipeline`` and collates it into a batch of one."""
    from mmengine.dataset import pseudo_collate
    data = pipeline(copy.deepcopy(dataset.get_data_info(index)))
    if data is None:
        raise ValueError(f'the pipeline dropped dataset item {index}')
    return pseudo_collate([data])


def read_rgb(path: str) -> np.ndarray:
    """Reads an image file as RGB uint8 (grayscale and alpha are converted).

    Raises:
        FileNotFoundError: Missing file. ValueError: unreadable or corrupt image.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'cannot decode image {path} (corrupt or unsupported format)')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

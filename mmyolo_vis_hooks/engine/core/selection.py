"""A fixed, reproducible choice of images and their loading through a test pipeline."""
import copy
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .checks import check_int, check_int_list


@dataclass(frozen=True)
class SampleRef:
    """One chosen image: its dataset index, path and a short stable name for tags."""
    index: int
    img_path: str
    name: str


def check_selection(num_images: int, img_indices: Optional[Sequence[int]]) -> None:
    """Checks selection arguments that can never work, before any data is read (TypeError for
    a wrong type, ValueError for a wrong value)."""
    if img_indices is not None:
        check_int_list('img_indices', img_indices, low=0)
    else:
        check_int('num_images', num_images, low=1)


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

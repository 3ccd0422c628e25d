"""The fixed choice of validation images (engine/core/selection.py): argument checks, seeded
choice, explicit indices, references and loading through a pipeline, on a stand-in dataset."""
import pytest
import torch

from mmyolo_vis_hooks.engine.core.selection import (SampleRef, check_selection,
                                                    load_through_pipeline, sample_refs,
                                                    select_indices)


class _Dataset:
    """What the selection reads of an MMEngine BaseDataset: ``get_data_info``."""

    def __init__(self, paths):
        self.infos = [dict(img_path=p, img_id=i) for i, p in enumerate(paths)]

    def get_data_info(self, index):
        return self.infos[index]


@pytest.mark.parametrize('num_images, img_indices, error, message', [
    (0, None, ValueError, 'num_images must be a positive int, got 0'),
    (2.5, None, TypeError, r'num_images must be a positive int, got 2\.5'),
    (4, [-1], ValueError, r'img_indices\[0\] must be an int >= 0, got -1'),
    (4, '0', TypeError, r"img_indices must be a list of ints, got '0'"),
    (4, [], ValueError, 'img_indices must be a non-empty list of ints'),
    (4, [1, 2.0], TypeError, r'img_indices\[1\] must be an int'),
])
def test_check_selection_refuses(num_images, img_indices, error, message):
    with pytest.raises(error, match=message):
        check_selection(num_images, img_indices)


def test_check_selection_accepts():
    check_selection(4, None)
    check_selection(0, [0, 5])  # num_images is not used when indices are given


def test_explicit_indices_in_order_without_repeats():
    assert select_indices(8, img_indices=[3, 1, 3, 0]) == [3, 1, 0]
    with pytest.raises(ValueError, match=r'img_indices \[100\] out of range: the validation '
                       r'dataset has 8 images \(valid indices 0\.\.7\)'):
        select_indices(8, img_indices=[1, 100])


def test_seeded_choice_is_fixed_sorted_and_in_range():
    first = select_indices(100, num_images=5, seed=0)
    assert first == select_indices(100, num_images=5, seed=0)  # every epoch, every run
    assert first == sorted(set(first)) and len(first) == 5
    assert all(0 <= i < 100 for i in first)
    assert select_indices(100, num_images=5, seed=1) != first
    assert select_indices(3, num_images=10) == [0, 1, 2]  # more than there are: all
    with pytest.raises(ValueError, match='the validation dataset is empty'):
        select_indices(0, num_images=2)


def test_sample_refs_name_images_by_file():
    dataset = _Dataset(['/data/val/val_00003.png', '/data/val/b.photo.jpg'])
    assert sample_refs(dataset, [1, 0]) == [SampleRef(1, '/data/val/b.photo.jpg', 'b.photo'),
                                            SampleRef(0, '/data/val/val_00003.png', 'val_00003')]
    dataset.infos[0] = dict(img_id=0)
    with pytest.raises(ValueError, match='dataset item 0 has no img_path'):
        sample_refs(dataset, [0])


def test_load_through_pipeline_batches_one_copy():
    dataset = _Dataset(['a.png', 'b.png'])

    def pipeline(info):
        info['img_path'] = 'changed'  # must not reach the dataset
        return dict(inputs=torch.full((3, 2, 2), float(info['img_id'])),
                    data_samples=info['img_path'])

    batch = load_through_pipeline(dataset, 1, pipeline)
    assert len(batch['inputs']) == 1 and (batch['inputs'][0] == 1).all()
    assert batch['data_samples'] == ['changed']
    assert dataset.infos[1]['img_path'] == 'b.png'
    with pytest.raises(ValueError, match='the pipeline dropped dataset item 0'):
        load_through_pipeline(dataset, 0, lambda info: None)

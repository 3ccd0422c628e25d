"""Image inputs of the offline tools: a file, a folder (recursively) or a text file listing paths."""
import os
import os.path as osp
from typing import List

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(source: str) -> List[str]:
    """Image paths from a file, a folder (searched recursively, sorted) or a ``.txt`` list.

    Raises:
        FileNotFoundError: Nothing exists at ``source``.
        ValueError: A folder or list holds no images, or a file has an unsupported extension.
    """
    if osp.isdir(source):
        paths = sorted(
            osp.join(root, name) for root, _, names in os.walk(source) for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) found in {source}')
        return paths
    if not osp.isfile(source):
        raise FileNotFoundError(f'image, folder or list not found: {source}')
    if source.lower().endswith('.txt'):
        base = osp.dirname(osp.abspath(source))
        with open(source, encoding='utf-8') as f:
            paths = [line.strip() for line in f if line.strip()]
        paths = [p if osp.isabs(p) else osp.join(base, p) for p in paths]
        if not paths:
            raise ValueError(f'the image list {source} is empty')
        return paths
    if not source.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(f'unsupported image file {source}; expected one of '
                         f'{", ".join(IMAGE_EXTENSIONS)}, a folder, or a .txt list of paths')
    return [source]

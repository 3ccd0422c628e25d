"""Sliced inference on large images with an MMYOLO detector.

A thin wrapper: the tool lives in ``mmyolo_vis_hooks.cli.large_image_infer``
(``--help`` lists its flags).
"""
from mmyolo_vis_hooks.cli.large_image_infer import main

if __name__ == '__main__':
    main()

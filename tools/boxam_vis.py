"""Box-level CAMs (one map per detected box) for images, offline; the engine BoxAMVisHook uses.

A thin wrapper: the tool lives in ``mmyolo_vis_hooks.cli.boxam_vis``
(``--help`` lists its flags).
"""
from mmyolo_vis_hooks.cli.boxam_vis import main

if __name__ == '__main__':
    main()

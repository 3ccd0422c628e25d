"""Feature maps of chosen layers for images, offline (the engine FeatMapVisHook uses).

A thin wrapper: the tool lives in ``mmyolo_vis_hooks.cli.featmap_vis``
(``--help`` lists its flags).
"""
from mmyolo_vis_hooks.cli.featmap_vis import main

if __name__ == '__main__':
    main()

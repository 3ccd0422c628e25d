"""Faithfulness of box-level CAM methods on a detector (deletion/insertion AUC, pointing game,
energy in the ground-truth box): a table, CSV, JSON and a plot of the curves.

A thin wrapper: the tool lives in ``mmyolo_vis_hooks.cli.boxam_eval``
(``--help`` lists its flags).
"""
from mmyolo_vis_hooks.cli.boxam_eval import main

if __name__ == '__main__':
    main()

"""Config snippets and the demo config, installed as ``mmyolo_vis_hooks.configs`` (setup.py maps
this folder into the package), so a pip user's config imports them without a clone."""

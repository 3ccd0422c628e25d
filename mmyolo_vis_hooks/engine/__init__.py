"""Engines shared by the hooks and the tools: capture, reduce, align, CAM, slicing."""

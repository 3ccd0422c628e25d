"""Plumbing for tools and hooks: safe checkpoint loading, building models, image files, the
large-image run over files, process memory settings."""

"""Snippets adding the hooks to any MMYOLO config (see each file's header)."""

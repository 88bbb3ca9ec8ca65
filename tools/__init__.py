"""Offline command-line tools; each is a thin CLI over megatron_glmd library functions."""

"""Checkpoints of a run: writing and publishing them, safe (weights-only) loading, the checks made before
any work, and elastic resume at another data-parallel size."""

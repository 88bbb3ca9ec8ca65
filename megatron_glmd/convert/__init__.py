"""Checkpoint conversion: megatron-glmd checkpoints read and written unsplit, GLM's released
checkpoints imported (THUDM's Megatron shards, the Hugging Face hub layout), resharding, export.

Modules: ``errors`` (ConvertError), ``glmd_checkpoint`` (this project's format).
"""
from .errors import ConvertError
from .glmd_checkpoint import read_checkpoint, write_checkpoint

__all__ = ["ConvertError", "read_checkpoint", "write_checkpoint"]

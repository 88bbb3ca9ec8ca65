"""Checkpoint conversion: megatron-glmd checkpoints read and written unsplit, GLM's released
checkpoints imported (THUDM's Megatron shards, the Hugging Face hub layout), resharding, export.

Modules: ``errors`` (ConvertError), ``glmd_checkpoint`` (this project's format), ``glm_source``
(reading THUDM's and the hub's files), ``glm_layout`` (GLM's names and fused-QKV layout against
ours), ``glm_import``, ``reshard``, ``export``. The CLIs are ``tools/convert_glm_checkpoint.py``,
``tools/reshard_checkpoint.py`` and ``tools/export_checkpoint.py``.
"""
from .errors import ConvertError
from .glmd_checkpoint import read_checkpoint, write_checkpoint

__all__ = ["ConvertError", "read_checkpoint", "write_checkpoint"]

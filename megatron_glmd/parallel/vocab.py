"""Vocabulary padding and the per-rank shard ranges of a vocab-parallel matrix."""
from __future__ import annotations

from typing import Tuple


def pad_vocab_size(vocab_size: int, tp_size: int, multiple: int = 128) -> int:
    """Round ``vocab_size`` up to a multiple of ``multiple * tp_size`` (each shard a multiple of 128)."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if tp_size < 1:
        raise ValueError(f"tp_size must be positive, got {tp_size}")
    step = multiple * tp_size
    return -(-vocab_size // step) * step


def vocab_shard_range(padded_vocab_size: int, tp_rank: int, tp_size: int) -> Tuple[int, int]:
    """Global ids ``[start, end)`` held by TP rank ``tp_rank`` of a padded vocabulary."""
    if padded_vocab_size % tp_size:
        raise ValueError(f"padded vocabulary {padded_vocab_size} is not divisible by TP size {tp_size}")
    shard = padded_vocab_size // tp_size
    return tp_rank * shard, (tp_rank + 1) * shard


def vocab_shard_real_columns(vocab_size: int, padded_vocab_size: int, tp_rank: int, tp_size: int) -> int:
    """Number of real (non-padding) columns at the start of this rank's shard.

    This is the ``vocab_end`` argument of :func:`kernels.softmax_kl.softmax_kl`: columns from
    it on are padding and must be excluded from the softmax.
    """
    start, end = vocab_shard_range(padded_vocab_size, tp_rank, tp_size)
    return max(0, min(vocab_size, end) - start)

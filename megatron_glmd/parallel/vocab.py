"""Vocabulary padding and the per-rank shard ranges of a vocab-parallel matrix."""
from __future__ import annotations

from typing import Tuple

from ..config import pad_vocab_size

__all__ = ["pad_vocab_size", "vocab_shard_range", "vocab_shard_real_columns"]


def vocab_shard_range(padded_vocab_size: int, tp_rank: int, tp_size: int) -> Tuple[int, int]:
    """Global ids ``[start, stop)`` held by TP rank ``tp_rank`` of a padded vocabulary."""
    if padded_vocab_size % tp_size:
        raise ValueError(f"padded vocabulary {padded_vocab_size} is not divisible by TP size {tp_size}")
    shard = padded_vocab_size // tp_size
    return tp_rank * shard, (tp_rank + 1) * shard


def vocab_shard_real_columns(vocab_size: int, padded_vocab_size: int, tp_rank: int, tp_size: int) -> int:
    """Number of real (non-padding) columns at the start of this rank's shard.

    This is the ``vocab_end`` argument of :func:`kernels.softmax_kl.softmax_kl`: columns from
    it on are padding and must be excluded from the softmax.
    """
    start, stop = vocab_shard_range(padded_vocab_size, tp_rank, tp_size)
    return max(0, min(vocab_size, stop) - start)

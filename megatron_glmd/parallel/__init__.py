"""Megatron-style parallel core: process grid, TP mappings and layers, RNG, vocab padding."""
from .grid import ParallelGrid
from .layers import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding, initialize_parameters,
                     mark_parameter)
from .mappings import copy_to_tp, gather_from_tp, group_rank, group_size, reduce_from_tp, scatter_to_tp
from .random import checkpoint, get_rng_tracker, model_parallel_seed
from .vocab import pad_vocab_size, vocab_shard_range, vocab_shard_real_columns

__all__ = [
    "ParallelGrid", "ColumnParallelLinear", "RowParallelLinear", "VocabParallelEmbedding",
    "initialize_parameters", "mark_parameter", "copy_to_tp", "gather_from_tp", "group_rank", "group_size",
    "reduce_from_tp", "scatter_to_tp", "checkpoint", "get_rng_tracker", "model_parallel_seed",
    "pad_vocab_size", "vocab_shard_range", "vocab_shard_real_columns",
]

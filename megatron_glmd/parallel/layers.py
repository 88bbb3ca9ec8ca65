"""Tensor-parallel layers: vocab-parallel embedding, column- and row-parallel linear.

Every parameter carries how it is initialised (``init``) and how it is split across TP ranks
(``tp_shard``). :func:`initialize_parameters` draws each *full* tensor from a generator
seeded by (seed, parameter name) and keeps this rank's slice, so a TP=2 model built with seed
s holds exactly the shards of the TP=1 model built with seed s — and pipeline stages hold
exactly the layers of the unsplit model, because names carry global layer indices.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .mappings import copy_to_tp, gather_from_tp, group_rank, group_size, reduce_from_tp, scatter_to_tp
from .vocab import vocab_shard_range


def mark_parameter(param: nn.Parameter, init: Tuple, shard_dim: Optional[int] = None,
                   tp_group: Optional[dist.ProcessGroup] = None) -> nn.Parameter:
    """Attach the init rule (``("normal", std)``, ``("ones",)`` or ``("zeros",)``) and the TP split."""
    param.init = init
    param.tp_shard = (shard_dim, group_rank(tp_group), group_size(tp_group))
    # Megatron's/DeepSpeed's flag: sharded parameters count on every TP rank in the global
    # gradient norm; replicated ones only on TP rank 0.
    param.tensor_model_parallel = shard_dim is not None and group_size(tp_group) > 1
    return param


def _stable_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


_INIT_ROW_BLOCK = 128


def _seeded_normal(shape, std: float, seed: int, name: str, device) -> torch.Tensor:
    """N(0, std²) drawn in blocks of 128 rows, each from its own generator.

    Row r's values depend only on (seed, name, r // 128), so a vocabulary padded to a different
    size (the padding depends on the TP size) leaves the real rows' values unchanged.
    """
    full = torch.empty(shape, dtype=torch.float32, device=device)
    for block, rows in enumerate(full.split(_INIT_ROW_BLOCK, dim=0)):
        generator = torch.Generator(device=device).manual_seed(_stable_seed(seed, f"{name}#{block}"))
        rows.normal_(0.0, std, generator=generator)
    return full


@torch.no_grad()
def initialize_parameters(named_parameters: Iterable[Tuple[str, nn.Parameter]], seed: int) -> None:
    """Initialise each parameter as this rank's slice of a full tensor seeded by (seed, name)."""
    for name, param in named_parameters:
        if param.device.type == "meta":
            continue
        init = getattr(param, "init", None)
        if init is None:
            raise ValueError(f"parameter {name!r} has no init rule; create it through mark_parameter()")
        shard_dim, rank, size = getattr(param, "tp_shard", (None, 0, 1))
        full_shape = list(param.shape)
        if shard_dim is not None:
            full_shape[shard_dim] *= size
        if init[0] == "normal":
            full = _seeded_normal(full_shape, init[1], seed, name, param.device)
        elif init[0] == "ones":
            full = torch.ones(full_shape, dtype=torch.float32, device=param.device)
        elif init[0] == "zeros":
            full = torch.zeros(full_shape, dtype=torch.float32, device=param.device)
        else:
            raise ValueError(f"parameter {name!r}: unknown init rule {init!r}")
        if shard_dim is not None and size > 1:
            full = full.chunk(size, dim=shard_dim)[rank]
        param.copy_(full)


def _empty(*shape, dtype=None, device=None) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype, device=device))


class VocabParallelEmbedding(nn.Module):
    """Embedding whose rows (vocabulary ids) are split across the TP group."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, init_std: float = 0.02,
                 tp_group: Optional[dist.ProcessGroup] = None, dtype=None, device=None):
        super().__init__()
        self.tp_group = tp_group
        self.num_embeddings = num_embeddings
        tp = group_size(tp_group)
        # Global ids [first_id, stop_id) of this rank's rows. (``vocab_end`` elsewhere is a count of
        # real columns in a logits shard, never a global id.)
        self.first_id, self.stop_id = vocab_shard_range(num_embeddings, group_rank(tp_group), tp)
        self.weight = mark_parameter(_empty(num_embeddings // tp, embedding_dim, dtype=dtype, device=device),
                                     ("normal", init_std), shard_dim=0, tp_group=tp_group)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if group_size(self.tp_group) == 1:
            return F.embedding(ids, self.weight)
        outside = (ids < self.first_id) | (ids >= self.stop_id)
        local = (ids - self.first_id).masked_fill(outside, 0)
        out = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tp(out, self.tp_group)


class ColumnParallelLinear(nn.Module):
    """``Y = X A^T + b`` with A split by output rows: each rank produces a slice of Y."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, gather_output: bool = False,
                 init_std: float = 0.02, tp_group: Optional[dist.ProcessGroup] = None, dtype=None, device=None):
        super().__init__()
        tp = group_size(tp_group)
        if out_features % tp:
            raise ValueError(f"ColumnParallelLinear: out_features {out_features} not divisible by TP size {tp}")
        self.tp_group = tp_group
        self.gather_output = gather_output
        self.weight = mark_parameter(_empty(out_features // tp, in_features, dtype=dtype, device=device),
                                     ("normal", init_std), shard_dim=0, tp_group=tp_group)
        self.bias = (mark_parameter(_empty(out_features // tp, dtype=dtype, device=device), ("zeros",),
                                    shard_dim=0, tp_group=tp_group) if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(copy_to_tp(x, self.tp_group), self.weight, self.bias)
        return gather_from_tp(y, self.tp_group) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """``Y = X A^T + b`` with A split by input columns: partial products are summed over TP."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, input_is_parallel: bool = True,
                 init_std: float = 0.02, tp_group: Optional[dist.ProcessGroup] = None, dtype=None, device=None):
        super().__init__()
        tp = group_size(tp_group)
        if in_features % tp:
            raise ValueError(f"RowParallelLinear: in_features {in_features} not divisible by TP size {tp}")
        self.tp_group = tp_group
        self.input_is_parallel = input_is_parallel
        self.weight = mark_parameter(_empty(out_features, in_features // tp, dtype=dtype, device=device),
                                     ("normal", init_std), shard_dim=1, tp_group=tp_group)
        self.bias = (mark_parameter(_empty(out_features, dtype=dtype, device=device), ("zeros",))
                     if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tp(x, self.tp_group)
        y = reduce_from_tp(F.linear(x, self.weight), self.tp_group)
        return y + self.bias if self.bias is not None else y

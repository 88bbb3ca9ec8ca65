"""Shared inputs and reference helpers for the model tests."""
from __future__ import annotations

import torch
import torch.distributed as dist

from megatron_glmd.config import preset


def tiny_config(**overrides):
    return preset("tiny-teacher", **{"hidden_dropout": 0.0, "attention_dropout": 0.0, **overrides})


def glm_batch(vocab_size: int, batch: int = 3, seq: int = 24, seed: int = 0):
    """A random blank-infilling-shaped batch: ids, 2D positions, sep and length per sample."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=g)
    sep = torch.randint(seq // 4, seq // 2, (batch,), generator=g)
    length = torch.randint(seq - seq // 4, seq + 1, (batch,), generator=g)
    length[0] = seq
    position_ids = torch.zeros(batch, 2, seq, dtype=torch.long)
    for b in range(batch):
        s = int(sep[b])
        position_ids[b, 0, :s] = torch.arange(s)
        position_ids[b, 0, s:] = torch.randint(0, s, (1,), generator=g)
        position_ids[b, 1, s:] = torch.arange(1, seq - s + 1)
    return ids, position_ids, sep, length


def gather_along(tensor: torch.Tensor, dim: int, group) -> torch.Tensor:
    size = dist.get_world_size(group)
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def full_gradients(module, group) -> dict:
    """Every parameter's gradient re-assembled from its TP shards (identical on every rank)."""
    grads = {}
    for name, param in module.named_parameters():
        shard_dim, _, size = getattr(param, "tp_shard", (None, 0, 1))
        grad = param.grad.detach()
        grads[name] = gather_along(grad, shard_dim, group) if shard_dim is not None and size > 1 else grad.clone()
    return grads

"""Autograd-aware communication for tensor parallelism (Megatron's conjugate pairs).

Each op takes the TP process group explicitly; ``None`` or a group of size 1 makes it the
identity, so single-process code runs through the same path. The all-reduces run in place on the
partial sums and gradients (no copy per collective), as Megatron-Core's do.

    copy_to_tp        forward: identity          backward: all-reduce
    reduce_from_tp    forward: all-reduce        backward: identity
    scatter_to_tp     forward: keep own slice    backward: all-gather   (last dim)
    gather_from_tp    forward: all-gather        backward: keep own slice (last dim)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


def group_size(group: Optional[dist.ProcessGroup]) -> int:
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group: Optional[dist.ProcessGroup]) -> int:
    return 0 if group is None else dist.get_rank(group)


def _all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    """Sum over the group, in place when ``x`` is contiguous (then ``x`` itself is returned)."""
    if group_size(group) == 1:
        return x
    x = x.contiguous()
    dist.all_reduce(x, group=group)
    return x


def _split_last(x: torch.Tensor, group) -> torch.Tensor:
    world = group_size(group)
    if world == 1:
        return x
    if x.shape[-1] % world:
        raise ValueError(f"last dimension {x.shape[-1]} is not divisible by the TP size {world}")
    return x.chunk(world, dim=-1)[group_rank(group)].contiguous()


def _gather_last(x: torch.Tensor, group) -> torch.Tensor:
    world = group_size(group)
    if world == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=-1)


class _CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        # In place, as Megatron-Core does. Safe because copy_to_tp's output feeds linear layers only,
        # whose backward hands over a fresh matmul product (see copy_to_tp: a consumer that passes
        # its incoming gradient on unchanged to another input, like an addition, would share it).
        return _all_reduce(grad, ctx.group), None


class _ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        # In place on the partial sum (a fresh product nobody else reads); mark_dirty tells autograd,
        # which then refuses a backward through any op that saved the overwritten values. A leaf
        # that requires grad cannot be overwritten: it is copied.
        if x.is_leaf and x.requires_grad or not x.is_contiguous():
            return _all_reduce(x.clone(memory_format=torch.contiguous_format), group)
        ctx.mark_dirty(x)
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _split_last(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _gather_last(grad, ctx.group), None


class _GatherFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _gather_last(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _split_last(grad, ctx.group), None


def copy_to_tp(x: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    """Identity; backward all-reduces the gradient in place, so the result must feed consumers whose
    backward makes a new gradient tensor (a linear layer, as everywhere in this project)."""
    return x if group_size(group) == 1 else _CopyToTP.apply(x, group)


def reduce_from_tp(x: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    return x if group_size(group) == 1 else _ReduceFromTP.apply(x, group)


def scatter_to_tp(x: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    return x if group_size(group) == 1 else _ScatterToTP.apply(x, group)


def gather_from_tp(x: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    return x if group_size(group) == 1 else _GatherFromTP.apply(x, group)

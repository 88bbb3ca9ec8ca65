"""Cross-entropy over vocabulary shards (hard labels), never gathering the logits.

Megatron's algebra: fp32 per-rank max → MAX all-reduce; Σ e^{x−m} and the target logit → one
SUM all-reduce; loss = log Σ e^{x−m} + m − x_target. The gradient ``softmax − onehot`` is local.
Padded vocabulary columns (from ``vocab_end`` on) are excluded from the softmax.

No host synchronisation (docs/design.md, "No host synchronisation inside a micro-batch"): the
target is read with a gather at the clamped local id and zeroed where another rank holds it
(``torch.where``), and backward subtracts the one-hot with a ``scatter_add_`` weighted by the
same mask, never indexing with a boolean mask (that needs the count of True entries on the host).
One working buffer: the logits in the compute dtype (at least fp32), turned into the softmax in
place and kept for backward, which turns it into the gradient in place, as Megatron-Core does.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from .mappings import group_rank, group_size


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, group, vocab_end):
        n, v = logits.shape
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)  # at least fp32
        # The one working buffer (a copy even in fp32: the caller's logits feed other losses too).
        x = logits.to(compute_dtype, copy=True)
        if vocab_end < v:
            x[:, vocab_end:] = float("-inf")
        row_max = (x.max(dim=-1).values if vocab_end > 0
                   else torch.full((n,), float("-inf"), dtype=compute_dtype, device=x.device))
        if group_size(group) > 1:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        x.sub_(row_max.unsqueeze(-1))                      # x − m (−inf on the padded columns)
        local_target = target - group_rank(group) * v
        in_shard = ((local_target >= 0) & (local_target < vocab_end)).to(compute_dtype)
        column = local_target.clamp(0, max(v - 1, 0)).unsqueeze(-1)     # [n, 1], in range on every rank
        picked = x.gather(-1, column).squeeze(-1)          # x_target − m where this rank holds the target
        target_shifted = torch.where(in_shard > 0, picked, torch.zeros_like(picked))   # (picked may be −inf elsewhere)
        exp = x.exp_()                                    # in place: the buffer now holds e^{x − m}
        stats = torch.stack([exp.sum(dim=-1), target_shifted])
        if group_size(group) > 1:
            dist.all_reduce(stats, group=group)
        sum_exp, target_shifted = stats
        loss = sum_exp.log() - target_shifted
        exp.div_(sum_exp.unsqueeze(-1))                   # in place: the softmax
        ctx.save_for_backward(exp, column, in_shard)
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        softmax, column, in_shard = ctx.saved_tensors
        grad = softmax                                    # in place: softmax − onehot, times the upstream grad
        grad.scatter_add_(-1, column, -in_shard.unsqueeze(-1))
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad.to(ctx.logits_dtype), None, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                                 group: Optional[dist.ProcessGroup] = None,
                                 vocab_end: Optional[int] = None) -> torch.Tensor:
    """Per-token cross-entropy ``[N]`` (fp32, or fp64 for fp64 logits) of ``[N, V_r]`` logit shards
    against global target ids."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [N, V_r] and target [N], got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    v = logits.shape[-1]
    vocab_end = v if vocab_end is None else vocab_end
    if not 0 <= vocab_end <= v:
        raise ValueError(f"vocab_end must be in [0, {v}], got {vocab_end}")
    return _VocabParallelCrossEntropy.apply(logits, target, group, vocab_end)

"""Cross-entropy over vocabulary shards (hard labels), never gathering the logits.

Megatron's algebra: fp32 per-rank max → MAX all-reduce; Σ e^{x−m} and the target logit → one
SUM all-reduce; loss = log Σ e^{x−m} + m − x_target. The gradient ``softmax − onehot`` is local.
Padded vocabulary columns (from ``vocab_end`` on) are excluded from the softmax.
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
        x = logits.to(compute_dtype)
        if vocab_end < v:
            x = x.clone()
            x[:, vocab_end:] = float("-inf")
        row_max = x.max(dim=-1).values if vocab_end > 0 else torch.full((n,), float("-inf"), device=x.device)
        if group_size(group) > 1:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        x = x - row_max.unsqueeze(-1)
        exp = x.exp_()  # in place: x now holds e^{x - m}
        start = group_rank(group) * v
        local_target = target - start
        in_shard = (local_target >= 0) & (local_target < vocab_end)
        rows = torch.arange(n, device=logits.device)
        target_shifted = torch.where(in_shard, logits.to(compute_dtype)[rows, local_target.clamp(0, v - 1)] - row_max,
                                     torch.zeros_like(row_max))
        stats = torch.stack([exp.sum(dim=-1), target_shifted])
        if group_size(group) > 1:
            dist.all_reduce(stats, group=group)
        sum_exp, target_shifted = stats
        loss = sum_exp.log() - target_shifted
        exp.div_(sum_exp.unsqueeze(-1))  # softmax
        ctx.save_for_backward(exp, local_target, in_shard)
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        softmax, local_target, in_shard = ctx.saved_tensors
        rows = torch.arange(softmax.shape[0], device=softmax.device)
        grad = softmax
        grad[rows[in_shard], local_target[in_shard]] -= 1.0
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

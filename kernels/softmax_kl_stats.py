"""The sharded algebra of `softmax_kl`: combine per-rank row statistics into global ones.

Each rank r has, per row, over its shard (a = s/tau, b = t/tau):
m_s = max a, l_s = sum exp(a - m_s), m_t = max b, l_t = sum exp(b - m_t),
c = sum exp(b - m_t) (b - a). Rescaled to the global maxima M these add up exactly:
L = sum_r l_r exp(m_r - M) and C = sum_r c_r exp(m_t,r - M_t), and then

    KL(p_t || p_s) = C / L_t - lse_t + lse_s,   lse = M + log L,
    d KL / d s     = (p_s - p_t) / tau,          p = exp(x/tau - lse),

so the gradient needs the two global log-sum-exps and nothing else from other ranks.

Communication is ONE all-gather of the `[5, N]` statistics into `[world, 5, N]`. A max-then-sum
scheme (as Megatron's vocab-parallel cross-entropy) needs two collectives (MAX of the maxima, then
SUM of three rescaled sums); the all-gather is one round of latency, its payload (5 N world
floats) is negligible next to the N V_r logits, and every rank combines the same numbers in the
same order, so the loss and the log-sum-exps are bit-identical on all ranks.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def group_size(group) -> int:
    """1 when `group` is None (the vocabulary is local) or has one rank."""
    if group is None:
        return 1
    return dist.get_world_size(group)


def gather(stats: torch.Tensor, group) -> torch.Tensor:
    """`[5, N]` local statistics -> `[world, 5, N]` statistics of every rank of `group`."""
    world = group_size(group)
    if world == 1:
        return stats.unsqueeze(0)
    rows, n = stats.shape
    # the concatenated form ([world * 5, N]) is the one every backend (gloo too) accepts
    out = torch.empty((world * rows, n), dtype=stats.dtype, device=stats.device)
    all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    all_gather(out, stats.contiguous(), group=group)
    return out.view(world, rows, n)


def _safe(m: torch.Tensor) -> torch.Tensor:
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)


def combine(stats_all: torch.Tensor):
    """`[world, 5, N]` statistics -> (kl, lse_s, lse_t), each `[N]`, tau-scaled units.

    KL is evaluated as C/L_t + (M_s - M_t) + (log L_s - log L_t): the large maxima cancel
    exactly before they meet the small terms, which keeps fp32 precise for large logits.
    """
    m_s, l_s, m_t, l_t, c = stats_all.unbind(1)
    big_m_s = _safe(m_s.amax(0))
    big_m_t = _safe(m_t.amax(0))
    w_t = torch.exp(m_t - big_m_t)  # an empty shard (m = -inf) weighs 0
    big_l_s = (l_s * torch.exp(m_s - big_m_s)).sum(0)
    big_l_t = (l_t * w_t).sum(0)
    big_c = (c * w_t).sum(0)
    log_l_s = torch.log(big_l_s)
    log_l_t = torch.log(big_l_t)
    kl = big_c / big_l_t + (big_m_s - big_m_t) + (log_l_s - log_l_t)
    return kl, big_m_s + log_l_s, big_m_t + log_l_t

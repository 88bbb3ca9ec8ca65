"""Naive reference for softmax_kl tests: log_softmax over the full (gathered, unpadded) vocabulary.

Computed in fp64 with autograd, independently of the kernels' sharded statistics.
"""
from __future__ import annotations

import math

import torch


def reference(student, teacher, *, temperature=1.0, mask=None, scale_by_t2=True, upstream=None):
    """(per-row loss [N], d(sum_i upstream_i loss_i)/d student [N, V]) in fp64.

    student, teacher: [N, V] full-vocabulary logits (no padding columns).
    """
    s = student.detach().to(torch.float64).requires_grad_(True)
    t = teacher.detach().to(torch.float64)
    log_p_s = torch.log_softmax(s / temperature, dim=-1)
    log_p_t = torch.log_softmax(t / temperature, dim=-1)
    p_t = log_p_t.exp()
    # 0 · log 0 = 0: columns the teacher gives probability 0 contribute nothing
    terms = torch.where(p_t > 0, p_t * (log_p_t - log_p_s), torch.zeros_like(p_t))
    loss = terms.sum(-1) * (temperature ** 2 if scale_by_t2 else 1.0)
    if mask is not None:
        loss = torch.where(mask.reshape(-1).bool(), loss, torch.zeros_like(loss))
    weights = torch.ones_like(loss) if upstream is None else upstream.to(torch.float64)
    (loss * weights).sum().backward()
    return loss.detach(), s.grad


def shard(full: torch.Tensor, rank: int, world: int, width: int, pad_value: float = 1e4):
    """Rank `rank`'s `[N, width]` shard of `[N, V]` columns, padded with `pad_value`.

    Returns (shard, vocab_end): the padding starts at column `vocab_end` of the shard. The
    padding is deliberately extreme so that a kernel which reads it gives a wrong answer.
    """
    n, v = full.shape
    lo = rank * width
    vocab_end = max(0, min(width, v - lo))
    out = torch.full((n, width), pad_value, dtype=full.dtype)
    out[:, :vocab_end] = full[:, lo:lo + vocab_end]
    return out, vocab_end


def assert_close_grad(actual, expected, rtol, atol=0.0):
    """Elementwise |a - e| <= rtol · (|e| + max|e|) + atol: relative to the gradient's scale."""
    actual = actual.to(torch.float64)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale + atol)


def grad_atol(student, teacher, tau, coef_max):
    """Absolute error bound of coef · tau · (p_s - p_t) from fp32 logits.

    Each p = exp(x/tau - lse) is evaluated from an argument with an absolute error of a few ulps
    of |x/tau| + |lse| <= 2 M + log V (M the largest finite |logit| / tau): a relative error of
    p up to 4 eps (2 M + log V) (two roundings, base-2 conversions). It dominates rtol · max|g|
    only for large logits (1e4 here: fp32 logits of 1e4 carry 5e-4 themselves) or where
    p_s ~ p_t (a student near its teacher).
    """
    s, t = student.double(), teacher.double()
    finite = torch.cat([s[torch.isfinite(s)], t[torch.isfinite(t)]])
    m = float(finite.abs().max()) / tau if finite.numel() else 0.0
    p_max = max(float(torch.softmax(x / tau, dim=-1).nan_to_num().max()) for x in (s, t))
    eps = torch.finfo(torch.float32).eps
    return 4 * eps * (2 * m + math.log(s.shape[-1])) * tau * coef_max * p_max

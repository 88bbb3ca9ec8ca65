"""Chunked PyTorch path of `softmax_kl` (CPU tensors, fp64 anywhere).

Same contract as the Triton path (`softmax_kl_triton`): `row_stats` returns this shard's per-row
statistics, `grad` writes the shard's gradient. Rows are processed in chunks of about
`CHUNK_ELEMENTS` values held in three reusable accumulation-dtype work buffers, so the peak extra
memory is those buffers plus the gradient in the input dtype, never an fp32 `[N, V]` tensor.
"""
from __future__ import annotations

import torch

# ~4 MiB of fp32 per work buffer: big enough that per-op overhead is small, small enough that
# the three buffers stay in a 32 MiB L3 cache.
CHUNK_ELEMENTS = 1 << 20


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp64 accumulation when any input is fp64 (gradcheck), fp32 otherwise."""
    return torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32


def _rows_per_chunk(width: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(width, 1))


def _neg_inf_to_zero(m: torch.Tensor) -> torch.Tensor:
    """A row maximum that is safe to subtract: -inf (no finite value) becomes 0."""
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)


def _load_scaled(x: torch.Tensor, inv_tau: float, out: torch.Tensor) -> torch.Tensor:
    """out = x / tau, upcast first so the scaling is done in the accumulation dtype."""
    out.copy_(x)
    if inv_tau != 1.0:
        out.mul_(inv_tau)
    return out


def row_stats(student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor | None,
              vocab_end: int, tau: float) -> torch.Tensor:
    """Per-row statistics of this shard's first `vocab_end` columns, as a `[5, N]` tensor.

    Rows: m_s, l_s, m_t, l_t, c with a = s/tau, b = t/tau, m = max, l = sum exp(x - m) and
    c = sum exp(b - m_t) (b - a). Rows with keep == False may hold anything (they are dropped).
    """
    n = student.shape[0]
    acc = acc_dtype(student, teacher)
    stats = torch.zeros(5, n, dtype=acc, device=student.device)
    stats[0].fill_(float("-inf"))
    stats[2].fill_(float("-inf"))
    if n == 0 or vocab_end == 0:
        return stats
    s = student[:, :vocab_end]
    t = teacher[:, :vocab_end]
    rows = min(n, _rows_per_chunk(vocab_end))
    work_a, work_b, work_e = (torch.empty(rows, vocab_end, dtype=acc, device=student.device)
                              for _ in range(3))
    inv_tau = 1.0 / tau
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        if keep is not None and not bool(keep[r0:r1].any()):
            continue
        a, b, e = work_a[: r1 - r0], work_b[: r1 - r0], work_e[: r1 - r0]
        _load_scaled(s[r0:r1], inv_tau, a)
        _load_scaled(t[r0:r1], inv_tau, b)
        m_s = a.amax(dim=1)
        m_t = b.amax(dim=1)
        torch.sub(a, _neg_inf_to_zero(m_s)[:, None], out=e)
        l_s = e.exp_().sum(dim=1)
        torch.sub(b, _neg_inf_to_zero(m_t)[:, None], out=e)
        l_t = e.exp_().sum(dim=1)
        torch.sub(b, a, out=a).mul_(e)
        # A column with teacher probability 0 contributes 0 even when b - a is inf or NaN (both
        # -inf). NaN inputs still reach the loss through the maxima above.
        c = torch.nansum(a, dim=1)
        stats[:, r0:r1] = torch.stack((m_s, l_s, m_t, l_t, c))
    return stats


def grad(student: torch.Tensor, teacher: torch.Tensor, lse_s: torch.Tensor, lse_t: torch.Tensor,
         coef: torch.Tensor, vocab_end: int, tau: float) -> torch.Tensor:
    """coef[i] * (softmax(s/tau) - softmax(t/tau)) over the global vocabulary, in the student dtype.

    lse_s, lse_t: global log-sum-exp of s/tau and t/tau per row. Rows with coef == 0 and the
    padding columns from `vocab_end` on are exactly 0.
    """
    n, v = student.shape
    out = torch.empty((n, v), dtype=student.dtype, device=student.device)
    out[:, vocab_end:].zero_()
    if n == 0 or vocab_end == 0:
        return out
    s = student[:, :vocab_end]
    t = teacher[:, :vocab_end]
    acc = acc_dtype(student, teacher)
    rows = min(n, _rows_per_chunk(vocab_end))
    work_a, work_b = (torch.empty(rows, vocab_end, dtype=acc, device=student.device)
                      for _ in range(2))
    inv_tau = 1.0 / tau
    coef = coef.to(acc)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        dead = coef[r0:r1] == 0
        if bool(dead.all()):
            out[r0:r1, :vocab_end].zero_()
            continue
        a, b = work_a[: r1 - r0], work_b[: r1 - r0]
        _load_scaled(s[r0:r1], inv_tau, a).sub_(lse_s[r0:r1, None]).exp_()
        _load_scaled(t[r0:r1], inv_tau, b).sub_(lse_t[r0:r1, None]).exp_()
        a.sub_(b).mul_(coef[r0:r1, None])
        if bool(dead.any()):  # dropped rows may have a meaningless (inf/NaN) log-sum-exp
            a.masked_fill_(dead[:, None], 0)
        out[r0:r1, :vocab_end].copy_(a)
    return out

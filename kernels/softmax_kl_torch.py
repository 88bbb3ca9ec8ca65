"""Chunked PyTorch path of `softmax_kl` (CPU tensors, fp64 anywhere).

Same contract as the Triton path (`softmax_kl_triton`): `row_stats` returns this shard's per-row
statistics, `grad` writes the shard's gradient. Rows are processed in chunks of about
`CHUNK_ELEMENTS` values held in reusable accumulation-dtype work buffers, so the peak extra memory
is those buffers plus the gradient in the input dtype, never an fp32 `[N, V]` tensor.

Parallelism: on the CPU the chunks are shared out to `torch.get_num_threads()` Python threads,
each running single-threaded ops (`torch.set_num_threads(1)` for the duration of the call, then
restored), instead of letting every op fork and join its own OpenMP team.
A chunk takes a dozen short ops; with one team per op, each join waits for the slowest thread, and
when another process competes for the cores that wait is a scheduler time slice: measured here
on 2 cores with one busy process, 11 s instead of 0.5 s for the statistics of 4096 x 50304.
"""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import torch

# 4 MiB of fp32 per work buffer (3 per thread in row_stats): few enough ops per row, and the
# buffers of two threads stay inside a 32 MiB L3 cache.
CHUNK_ELEMENTS = 1 << 20
# below this many values, starting threads costs more than it saves
MIN_POOL_ELEMENTS = 1 << 16


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp64 accumulation when any input is fp64 (gradcheck), fp32 otherwise."""
    return torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32


def _neg_inf_to_zero(m: torch.Tensor) -> torch.Tensor:
    """A row maximum that is safe to subtract: -inf (no finite value) becomes 0."""
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)


def _for_each_chunk(n: int, width: int, device: torch.device, n_buffers: int, dtype, work):
    """Call work(r0, r1, buffers) over row chunks [r0, r1); `buffers` are per-thread scratch.

    On the CPU every op runs single-threaded for the duration (see the module docstring); the
    chunks go to a pool of `torch.get_num_threads()` threads when there are enough of them.
    """
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    rows = max(1, CHUNK_ELEMENTS // max(width, 1))
    pooled = threads > 1 and n >= 2 and n * width >= MIN_POOL_ELEMENTS
    if pooled:
        rows = min(rows, -(-n // (4 * threads)))  # ~4 chunks per thread to balance the load
    starts = itertools.count(0, rows)  # next() is atomic under the GIL

    def worker():
        with torch.no_grad():  # grad mode is per thread: the pool's threads start with it on
            buffers = [torch.empty(min(rows, n), width, dtype=dtype, device=device)
                       for _ in range(n_buffers)]
            for r0 in starts:
                if r0 >= n:
                    return
                r1 = min(n, r0 + rows)
                work(r0, r1, [b[: r1 - r0] for b in buffers])

    if threads <= 1:
        worker()
        return
    torch.set_num_threads(1)  # also what new threads initialise their intra-op team size from
    try:
        if not pooled:
            worker()
            return
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(worker) for _ in range(threads)]:
                future.result()
    finally:
        torch.set_num_threads(threads)


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
    inv_tau = 1.0 / tau

    def work(r0, r1, buffers):
        if keep is not None and not bool(keep[r0:r1].any()):
            return
        a, b, e = buffers
        # max(x)/tau is max(x/tau) exactly (tau > 0, rounding is monotone); then a = s/tau - m_s
        # in one op, in the accumulation dtype (type promotion by the fp32/fp64 maxima)
        m_s = _neg_inf_to_zero(s[r0:r1].amax(dim=1).to(acc) * inv_tau)
        m_t = _neg_inf_to_zero(t[r0:r1].amax(dim=1).to(acc) * inv_tau)
        torch.add(-m_s[:, None], s[r0:r1], alpha=inv_tau, out=a)
        torch.add(-m_t[:, None], t[r0:r1], alpha=inv_tau, out=b)
        l_s = torch.exp(a, out=e).sum(dim=1)
        l_t = torch.exp(b, out=e).sum(dim=1)
        # (b - m_t) - (a - m_s): the shifted logits are what is left in the buffers
        torch.sub(b, a, out=a).mul_(e)
        # A column with teacher probability 0 contributes 0 even where b - a is inf or NaN (both
        # -inf); NaN inputs still reach the loss through the maxima above.
        c = torch.nansum(a, dim=1) + (m_t - m_s) * l_t
        stats[:, r0:r1] = torch.stack((m_s, l_s, m_t, l_t, c))

    _for_each_chunk(n, vocab_end, student.device, 3, acc, work)
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
    inv_tau = 1.0 / tau
    coef = coef.to(acc)
    neg_lse_s, neg_lse_t = -lse_s.to(acc), -lse_t.to(acc)
    direct = student.dtype == acc  # the gradient slice itself can be the work buffer

    def work(r0, r1, buffers):
        dead = coef[r0:r1] == 0
        target = out[r0:r1, :vocab_end]
        if bool(dead.all()):
            target.zero_()
            return
        a = target if direct else buffers[0]
        b = buffers[-1]
        # x/tau - lse in one op, computed in the accumulation dtype (type promotion by -lse)
        torch.add(neg_lse_s[r0:r1, None], s[r0:r1], alpha=inv_tau, out=a).exp_()
        torch.add(neg_lse_t[r0:r1, None], t[r0:r1], alpha=inv_tau, out=b).exp_()
        a.sub_(b).mul_(coef[r0:r1, None])
        if bool(dead.any()):  # dropped rows may have a meaningless (inf/NaN) log-sum-exp
            a.masked_fill_(dead[:, None], 0)
        if not direct:
            target.copy_(a)

    _for_each_chunk(n, vocab_end, student.device, 1 if direct else 2, acc, work)
    return out

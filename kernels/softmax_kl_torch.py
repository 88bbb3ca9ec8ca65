"""Chunked PyTorch path of `softmax_kl` (CPU tensors, fp64 anywhere).

Same contract as the Triton path (`softmax_kl_triton`): `row_stats` returns this shard's per-row
statistics, `grad` writes the shard's gradient. Rows are processed in chunks of about
`CHUNK_ELEMENTS` values (`STATS_CHUNK_ELEMENTS` in row_stats, whose x and f(x) work in fp64)
held in reusable work buffers, so the peak extra memory is those buffers plus the gradient in
the input dtype, never an fp32 `[N, V]` tensor. Nothing here reads a tensor's value on the host
(no `.item()`, `bool()`, `nonzero`, boolean-mask indexing): every row is computed and masked
rows are zeroed, so on a GPU this path would never wait for the device.

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

from .softmax_kl_stats import N_STATS

# 4 MiB of fp32 per work buffer (2 per thread in grad): few enough ops per row, and the
# buffers of two threads stay inside a 32 MiB L3 cache.
CHUNK_ELEMENTS = 1 << 20
# row_stats holds one accumulation-dtype and two fp64 buffers: 5 MiB per thread at this size
STATS_CHUNK_ELEMENTS = 1 << 18
# below this many values, starting threads costs more than it saves
MIN_POOL_ELEMENTS = 1 << 16


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp64 accumulation when any input is fp64 (gradcheck), fp32 otherwise."""
    return torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32


def _neg_inf_to_zero(m: torch.Tensor) -> torch.Tensor:
    """A row maximum that is safe to subtract: -inf (no finite value) becomes 0."""
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)


def _for_each_chunk(n: int, width: int, device: torch.device, dtypes, work,
                    chunk_elements: int | None = None):
    """Call work(r0, r1, buffers) over row chunks [r0, r1) of about `chunk_elements` values
    (default `CHUNK_ELEMENTS`); `buffers` are per-thread scratch, one per dtype in `dtypes`.

    On the CPU every op runs single-threaded for the duration (see the module docstring); the
    chunks go to a pool of `torch.get_num_threads()` threads when there are enough of them.
    """
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    rows = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(width, 1))
    pooled = threads > 1 and n >= 2 and n * width >= MIN_POOL_ELEMENTS
    if pooled:
        rows = min(rows, -(-n // (4 * threads)))  # ~4 chunks per thread to balance the load
    starts = itertools.count(0, rows)  # next() is atomic under the GIL

    def worker():
        with torch.no_grad():  # grad mode is per thread: the pool's threads start with it on
            buffers = [torch.empty(min(rows, n), width, dtype=dtype, device=device)
                       for dtype in dtypes]
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
    """This shard's `[9, N]` statistics (`softmax_kl_stats`) over its first `vocab_end` columns.

    The reference column k is the teacher's argmax; nu is the exact teacher-weighted mean of
    d - (s_k - t_k)/tau, so x sums to ~0 and f carries the KL. s - t is formed in fp64 (exact
    for fp32/bf16/fp16 inputs), x and f(x) are evaluated and summed in fp64 and rounded once.
    Every row is computed, masked or not (no data-dependent branch, so no device-to-host sync);
    rows with keep == False may hold anything (the caller drops them).
    """
    n = student.shape[0]
    acc = acc_dtype(student, teacher)
    stats = torch.zeros(N_STATS, n, dtype=acc, device=student.device)
    stats[0].fill_(float("-inf"))
    stats[2].fill_(float("-inf"))
    if n == 0 or vocab_end == 0:
        return stats
    s = student[:, :vocab_end]
    t = teacher[:, :vocab_end]
    inv_tau = 1.0 / tau
    wide = torch.float64

    def work(r0, r1, buffers):
        a, y, w = buffers  # a in the accumulation dtype, y and w in fp64
        s_c, t_c = s[r0:r1], t[r0:r1]
        # max(x)/tau is max(x/tau) exactly (tau > 0, rounding is monotone); then a = s/tau - m
        # in one op, in the accumulation dtype (type promotion by the fp32/fp64 maxima)
        m_s = _neg_inf_to_zero(s_c.amax(dim=1).to(acc) * inv_tau)
        t_max, k = t_c.max(dim=1)
        m_t = _neg_inf_to_zero(t_max.to(acc) * inv_tau)
        torch.add(-m_s[:, None], s_c, alpha=inv_tau, out=a)
        l_s = torch.exp(a, out=a).sum(dim=1)
        torch.add(-m_t[:, None], t_c, alpha=inv_tau, out=a)
        w.copy_(torch.exp(a, out=a))  # the teacher's weights exp(b - m_t)
        l_t = w.sum(dim=1)
        # reference: the logit difference at the teacher's argmax, exact in fp64
        k = k[:, None]
        ref = s_c.gather(1, k).to(wide) - t_c.gather(1, k).to(wide)
        ref = torch.where(torch.isfinite(ref), ref, torch.zeros_like(ref))
        y.copy_(s_c)
        y.sub_(t_c).sub_(ref).mul_(inv_tau)  # d - ref/tau, s - t exact in fp64
        # a column the teacher gives weight 0 contributes 0, also where y is inf or NaN
        y.masked_fill_(w == 0, 0.0)
        nu = _row_dot(y, w) / l_t
        nu = torch.where(torch.isfinite(nu), nu, torch.zeros_like(nu))
        y.sub_(nu[:, None])  # x
        big_x = _row_dot(y, w)
        # sum w f(x) = sum w expm1(x) - sum w x: x has weighted mean ~0, so the subtraction
        # loses about eps64 * E|x| (f_wide's argument about relative precision)
        big_f = _row_dot(torch.expm1(y, out=y), w) - big_x
        r_hi = ref[:, 0].to(acc)
        r_lo = (ref[:, 0] - r_hi.to(wide)).to(acc)
        stats[:, r0:r1] = torch.stack((m_s, l_s, m_t, l_t.to(acc), r_hi, r_lo, nu.to(acc),
                                       big_x.to(acc), big_f.to(acc)))

    _for_each_chunk(n, vocab_end, student.device, (acc, wide, wide), work,
                    STATS_CHUNK_ELEMENTS)
    return stats


def _row_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row dot product of two `[rows, V]` tensors without a `[rows, V]` temporary."""
    return torch.bmm(x.unsqueeze(1), y.unsqueeze(2)).view(-1)


def grad(student: torch.Tensor, teacher: torch.Tensor, lse_s: torch.Tensor, lse_t: torch.Tensor,
         coef: torch.Tensor, vocab_end: int, tau: float) -> torch.Tensor:
    """coef[i] * (softmax(s/tau) - softmax(t/tau)) over the global vocabulary, in the student dtype.

    lse_s, lse_t: global log-sum-exp of s/tau and t/tau per row. Rows with coef == 0 and the
    padding columns from `vocab_end` on are exactly 0. Every row is computed and rows with
    coef == 0 are zeroed afterwards (their log-sum-exps may be inf or NaN): no data-dependent
    branch, so no device-to-host sync.
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
    dead = coef == 0
    neg_lse_s, neg_lse_t = -lse_s.to(acc), -lse_t.to(acc)
    direct = student.dtype == acc  # the gradient slice itself can be the work buffer

    def work(r0, r1, buffers):
        target = out[r0:r1, :vocab_end]
        a = target if direct else buffers[0]
        b = buffers[-1]
        # x/tau - lse in one op, computed in the accumulation dtype (type promotion by -lse)
        torch.add(neg_lse_s[r0:r1, None], s[r0:r1], alpha=inv_tau, out=a).exp_()
        torch.add(neg_lse_t[r0:r1, None], t[r0:r1], alpha=inv_tau, out=b).exp_()
        a.sub_(b).mul_(coef[r0:r1, None])
        a.masked_fill_(dead[r0:r1, None], 0)  # dropped rows: 0, even from inf/NaN
        if not direct:
            target.copy_(a)

    _for_each_chunk(n, vocab_end, student.device, (acc,) if direct else (acc, acc), work)
    return out

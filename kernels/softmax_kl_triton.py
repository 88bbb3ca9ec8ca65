"""Triton path of `softmax_kl`: a row-statistics kernel and a gradient kernel.

One program per row loops over the shard in blocks of `BLOCK_V` columns, accumulating in fp32, so
any shard width works and nothing of size `[N, V]` is allocated except the gradient (input dtype).
Traffic: `row_stats` reads both inputs once (its first block twice, from cache), `grad` reads them
again and writes the gradient once (10 bytes per row and column in bf16). Rows whose mask (or
gradient coefficient) is 0 read nothing.

- Loads are masked with the shard width, a multiple of 16 in every layout (the vocabulary is
  padded to 128 * TP), and `vocab_end` (the real columns) is applied with `tl.where`: a mask
  bound such as 50265 - offset (9 mod 16 on the last rank) would turn every load into 16-bit
  scalar loads, and the all-gather makes every rank wait for the slowest.
- `row_stats` keeps per-lane running maxima and sums (one exp per element and input: see
  `_online_update`) and reduces across lanes once per row, at the end, plus once at the start
  for the row's reference (`softmax_kl_stats`). The gradient kernel works in base 2 (`exp2` of
  logits pre-multiplied by log2(e)/tau; the host converts the log-sum-exps).
- `CONFIGS` are the autotune candidates of both kernels; `row_stats(..., config=)` and
  `grad(..., config=)` force one (the GPU check times each).

`TRITON_INTERPRET=1` must be set before this module (and triton) is first imported for the
kernels to run on CPU tensors; `INTERPRETED` records whether that was the case.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .softmax_kl_stats import N_STATS

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_BLOCK_V = 8192  # the interpreter's block (at most); compiled launches use CONFIGS
LOG2E = 1.0 / math.log(2.0)


@triton.jit
def _two_diff(a, b):
    """a - b = hi + lo exactly (Knuth's two-sum of a and -b). Additions only, so FMA contraction
    cannot change it; lo is 0 where hi is not finite."""
    hi = a - b
    v = hi - a
    lo = (a - (hi - v)) - (b + v)
    return hi, tl.where(tl.abs(hi) < float("inf"), lo, 0.0)


@triton.jit
def _f(x):
    """e^x - 1 - x >= 0 in fp32 without cancellation: Taylor to x^10/10! below |x| = 1 (truncation
    2/11! = 5e-8 relative at |x| = 1), e^x - 1 - x above (cancellation at most e/(e - 2) = 3.8)."""
    p = 1.0 / 3628800.0
    p = p * x + 1.0 / 362880.0
    p = p * x + 1.0 / 40320.0
    p = p * x + 1.0 / 5040.0
    p = p * x + 1.0 / 720.0
    p = p * x + 1.0 / 120.0
    p = p * x + 1.0 / 24.0
    p = p * x + 1.0 / 6.0
    p = p * x + 0.5
    return tl.where(tl.abs(x) < 1.0, x * x * p, tl.exp(x) - 1.0 - x)


@triton.jit
def _online_update(m, l, v):
    """Per-lane running max m and sum l of exp(. - m) after the values v, with one exp:
    e = exp(-|v - m|) is the old sum's rescale where v > m and the new term elsewhere."""
    up = v > m
    e = tl.exp(tl.where(v == float("-inf"), float("-inf"), -tl.abs(v - m)))
    return up, e, tl.where(up, l * e + 1.0, l + e), tl.where(up, v, m)


@triton.jit
def _lane_total(m, acc):
    """The sum over lanes of acc, rescaled from each lane's max m to the row's max."""
    big_m = tl.max(m, axis=0)
    w = tl.exp(m - tl.where(big_m == float("-inf"), 0.0, big_m))
    return tl.sum(tl.where(w > 0, acc * w, 0.0), axis=0)


@triton.jit
def _row_stats_kernel(S, T, KEEP, STATS, n_rows, s_stride_r, s_stride_c, t_stride_r, t_stride_c,
                      width, vocab_end, inv_tau, HAS_KEEP: tl.constexpr, BLOCK_V: tl.constexpr):
    # natural units here (tl.exp is exp2 of a product anyway)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_V)
    end = vocab_end
    if HAS_KEEP:  # a dropped row reads nothing
        end = tl.where(tl.load(KEEP + row) != 0, vocab_end, 0)
    lim = tl.where(end > 0, width, 0)
    s_row = S + row * s_stride_r
    t_row = T + row * t_stride_r

    # the reference: s_k - t_k (exactly, as r_hi + r_lo) at the teacher's argmax k in the first
    # block, and nu, the teacher-weighted mean of the first block's d - (s_k - t_k)/tau
    s0 = tl.load(s_row + cols * s_stride_c, mask=cols < lim, other=0.0).to(tl.float32)
    t0 = tl.load(t_row + cols * t_stride_c, mask=cols < lim, other=0.0).to(tl.float32)
    b0 = tl.where(cols < end, t0 * inv_tau, float("-inf"))
    m0, k = tl.max(b0, axis=0, return_indices=True)
    s_k = tl.load(s_row + k * s_stride_c, mask=end > 0, other=0.0).to(tl.float32)
    t_k = tl.load(t_row + k * t_stride_c, mask=end > 0, other=0.0).to(tl.float32)
    r_hi, r_lo = _two_diff(s_k, t_k)
    finite = tl.abs(r_hi) < float("inf")
    r_hi = tl.where(finite, r_hi, 0.0)
    r_lo = tl.where(finite, r_lo, 0.0)
    hi, lo = _two_diff(s0, t0)
    w0 = tl.exp(b0 - tl.where(m0 == float("-inf"), 0.0, m0))
    y0 = ((hi - r_hi) + (lo - r_lo)) * inv_tau
    nu = tl.sum(tl.where(w0 > 0, w0 * y0, 0.0), axis=0) / tl.sum(w0, axis=0)
    nu = tl.where(tl.abs(nu) < float("inf"), nu, 0.0)

    # per-lane online sums, combined across lanes once at the end
    m_s = tl.full([BLOCK_V], float("-inf"), tl.float32)
    l_s = tl.zeros([BLOCK_V], tl.float32)
    m_t = tl.full([BLOCK_V], float("-inf"), tl.float32)
    l_t = tl.zeros([BLOCK_V], tl.float32)
    acc_x = tl.zeros([BLOCK_V], tl.float32)
    acc_f = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, end, BLOCK_V):
        offs = start + cols
        s = tl.load(s_row + offs * s_stride_c, mask=offs < lim, other=0.0).to(tl.float32)
        t = tl.load(t_row + offs * t_stride_c, mask=offs < lim, other=0.0).to(tl.float32)
        real = offs < end
        _, _, l_s, m_s = _online_update(m_s, l_s, tl.where(real, s * inv_tau, float("-inf")))
        up, e, l_t, m_t = _online_update(m_t, l_t, tl.where(real, t * inv_tau, float("-inf")))
        hi, lo = _two_diff(s, t)
        x = ((hi - r_hi) + (lo - r_lo)) * inv_tau - nu
        fx = _f(x)
        # teacher weight 0 contributes 0, also where x is inf or NaN (both logits -inf)
        kept = e > 0
        acc_x = tl.where(up, tl.where(kept, acc_x * e, 0.0) + x,
                         acc_x + tl.where(kept, e * x, 0.0))
        acc_f = tl.where(up, tl.where(kept, acc_f * e, 0.0) + fx,
                         acc_f + tl.where(kept, e * fx, 0.0))
    tl.store(STATS + row, tl.max(m_s, axis=0))
    tl.store(STATS + n_rows + row, _lane_total(m_s, l_s))
    tl.store(STATS + 2 * n_rows + row, tl.max(m_t, axis=0))
    tl.store(STATS + 3 * n_rows + row, _lane_total(m_t, l_t))
    tl.store(STATS + 4 * n_rows + row, r_hi)
    tl.store(STATS + 5 * n_rows + row, r_lo)
    tl.store(STATS + 6 * n_rows + row, nu)
    tl.store(STATS + 7 * n_rows + row, _lane_total(m_t, acc_x))
    tl.store(STATS + 8 * n_rows + row, _lane_total(m_t, acc_f))


@triton.jit
def _grad_kernel(S, T, G, LSE_S, LSE_T, COEF, s_stride_r, s_stride_c, t_stride_r, t_stride_c,
                 g_stride_r, n_cols, vocab_end, scale2, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_V)
    coef = tl.load(COEF + row)
    lse_s = tl.load(LSE_S + row)  # base 2
    lse_t = tl.load(LSE_T + row)
    live = coef != 0  # a row with coefficient 0 reads nothing
    lim = tl.where(live, n_cols, 0)
    end = tl.where(live, vocab_end, 0)
    s_row = S + row * s_stride_r
    t_row = T + row * t_stride_r
    g_row = G + row * g_stride_r
    for start in range(0, n_cols, BLOCK_V):
        offs = start + cols
        a = tl.load(s_row + offs * s_stride_c, mask=offs < lim, other=0.0).to(tl.float32)
        b = tl.load(t_row + offs * t_stride_c, mask=offs < lim, other=0.0).to(tl.float32)
        p_s = tl.exp2(a * scale2 - lse_s)
        p_t = tl.exp2(b * scale2 - lse_t)
        g = tl.where(offs < end, (p_s - p_t) * coef, 0.0)
        tl.store(g_row + offs, g.to(G.dtype.element_ty), mask=offs < n_cols)


# Autotune candidates of both kernels (BLOCK_V, num_warps); few on purpose, every config is
# compiled per dtype and specialisation. row_stats keeps six per-lane fp32 sums, each
# BLOCK_V / (32 num_warps) values per thread: 8 or 16 here, 128-bit loads with no spills
# (tests/kernels/test_triton_aot.py; kernels/benchmarks/aot_softmax_kl.py compiles every config
# for sm_80 and sm_90). (1024, 4) was dropped: ptxas spills 8 bytes of row_stats in bf16 on sm_80.
CONFIGS = [triton.Config({"BLOCK_V": b}, num_warps=w)
           for b, w in ((2048, 4), (2048, 8), (4096, 8), (4096, 16))]

# Compiled GPU launches pick a config per shard width and dtype (the best values differ between
# the two kernels); the interpreter runs one fixed block.
_row_stats_tuned = None if INTERPRETED else triton.autotune(
    CONFIGS, key=["width", "vocab_end"])(_row_stats_kernel)
_grad_tuned = None if INTERPRETED else triton.autotune(
    CONFIGS, key=["n_cols", "vocab_end"])(_grad_kernel)


def _block(width: int) -> int:
    return max(16, min(MAX_BLOCK_V, triton.next_power_of_2(max(width, 1))))


def _launch(kernel, tuned, config, n, args, width, **constexprs):
    """One launch: `config` forced, else the autotuned kernel (GPU) or a fixed block."""
    if config is not None:
        kernel[(n,)](*args, **constexprs, BLOCK_V=config.kwargs["BLOCK_V"],
                     num_warps=config.num_warps)
    elif tuned is not None and args[0].is_cuda:
        tuned[(n,)](*args, **constexprs)
    else:
        kernel[(n,)](*args, **constexprs, BLOCK_V=_block(width))


def row_stats(student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor | None,
              vocab_end: int, tau: float, config: triton.Config | None = None) -> torch.Tensor:
    """Same contract as `softmax_kl_torch.row_stats` (fp32 `[9, N]`); `config` (one of
    `CONFIGS`) forces a block size and warp count instead of autotuning."""
    n, width = student.shape
    stats = torch.empty(N_STATS, n, dtype=torch.float32, device=student.device)
    if n == 0:
        return stats
    args = (student, teacher, keep if keep is not None else stats, stats, n,
            student.stride(0), student.stride(1), teacher.stride(0), teacher.stride(1),
            width, vocab_end, 1.0 / tau)
    _launch(_row_stats_kernel, _row_stats_tuned, config, n, args, vocab_end,
            HAS_KEEP=keep is not None)
    return stats


def grad(student: torch.Tensor, teacher: torch.Tensor, lse_s: torch.Tensor, lse_t: torch.Tensor,
         coef: torch.Tensor, vocab_end: int, tau: float,
         config: triton.Config | None = None) -> torch.Tensor:
    """Same contract as `softmax_kl_torch.grad`; `config` as in `row_stats`."""
    n, v = student.shape
    out = torch.empty((n, v), dtype=student.dtype, device=student.device)
    if n == 0:
        return out
    args = (student, teacher, out, (lse_s * LOG2E).float().contiguous(),
            (lse_t * LOG2E).float().contiguous(), coef.float().contiguous(),
            student.stride(0), student.stride(1), teacher.stride(0), teacher.stride(1),
            out.stride(0), v, vocab_end, LOG2E / tau)
    _launch(_grad_kernel, _grad_tuned, config, n, args, v)
    return out

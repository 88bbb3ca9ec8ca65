"""Triton path of `softmax_kl`: a row-statistics kernel and a gradient kernel.

One program per row loops over the shard in blocks of at most `MAX_BLOCK_V` columns, accumulating
in fp32, so any shard width works and nothing of size `[N, V]` is allocated except the gradient
(input dtype). The gradient kernel works in base 2 (`exp2` of logits pre-multiplied by
log2(e)/tau; the host converts the log-sum-exps). Traffic: `row_stats` reads both inputs once,
`grad` reads them again and writes the gradient once (10 bytes per row and column in bf16).
Rows whose mask (or gradient coefficient) is 0 read nothing.

`TRITON_INTERPRET=1` must be set before this module (and triton) is first imported for the
kernels to run on CPU tensors; `INTERPRETED` records whether that was the case.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_BLOCK_V = 8192  # Fast-LLM's lesson: blocks beyond 16K columns lose most of the bandwidth
LOG2E = 1.0 / math.log(2.0)


@triton.jit
def _row_stats_kernel(S, T, KEEP, STATS, n_rows, s_stride_r, s_stride_c, t_stride_r, t_stride_c,
                      vocab_end, inv_tau, HAS_KEEP: tl.constexpr, BLOCK_V: tl.constexpr):
    # natural units here (tl.exp is exp2 of a product anyway): KL(p || p) comes out exactly 0
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_V)
    end = vocab_end
    if HAS_KEEP:  # a dropped row reads nothing
        end = tl.where(tl.load(KEEP + row) != 0, vocab_end, 0)
    s_row = S + row * s_stride_r
    t_row = T + row * t_stride_r
    m_s = float("-inf")
    l_s = 0.0
    m_t = float("-inf")
    l_t = 0.0
    c = 0.0
    for start in range(0, end, BLOCK_V):
        offs = start + cols
        inside = offs < end
        a = tl.load(s_row + offs * s_stride_c, mask=inside, other=float("-inf")).to(tl.float32)
        b = tl.load(t_row + offs * t_stride_c, mask=inside, other=float("-inf")).to(tl.float32)
        a = a * inv_tau
        b = b * inv_tau
        new_m_s = tl.maximum(m_s, tl.max(a, axis=0))
        new_m_t = tl.maximum(m_t, tl.max(b, axis=0))
        ref_s = tl.where(new_m_s == float("-inf"), 0.0, new_m_s)  # safe to subtract
        ref_t = tl.where(new_m_t == float("-inf"), 0.0, new_m_t)
        e_s = tl.exp(a - ref_s)
        e_t = tl.exp(b - ref_t)
        rescale_t = tl.exp(m_t - ref_t)
        l_s = l_s * tl.exp(m_s - ref_s) + tl.sum(e_s, axis=0)
        l_t = l_t * rescale_t + tl.sum(e_t, axis=0)
        # teacher probability 0 contributes 0, also where b - a is inf or NaN (both -inf)
        c = c * rescale_t + tl.sum(tl.where(e_t > 0, e_t * (b - a), 0.0), axis=0)
        m_s = new_m_s
        m_t = new_m_t
    tl.store(STATS + row, m_s)
    tl.store(STATS + n_rows + row, l_s)
    tl.store(STATS + 2 * n_rows + row, m_t)
    tl.store(STATS + 3 * n_rows + row, l_t)
    tl.store(STATS + 4 * n_rows + row, c)


@triton.jit
def _grad_kernel(S, T, G, LSE_S, LSE_T, COEF, s_stride_r, s_stride_c, t_stride_r, t_stride_c,
                 g_stride_r, n_cols, vocab_end, scale2, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_V)
    coef = tl.load(COEF + row)
    lse_s = tl.load(LSE_S + row)  # base 2
    lse_t = tl.load(LSE_T + row)
    end = tl.where(coef != 0, vocab_end, 0)  # a row with coefficient 0 reads nothing
    s_row = S + row * s_stride_r
    t_row = T + row * t_stride_r
    g_row = G + row * g_stride_r
    for start in range(0, n_cols, BLOCK_V):
        offs = start + cols
        inside = offs < end
        a = tl.load(s_row + offs * s_stride_c, mask=inside, other=0.0).to(tl.float32)
        b = tl.load(t_row + offs * t_stride_c, mask=inside, other=0.0).to(tl.float32)
        p_s = tl.exp2(a * scale2 - lse_s)
        p_t = tl.exp2(b * scale2 - lse_t)
        g = tl.where(inside, (p_s - p_t) * coef, 0.0)
        tl.store(g_row + offs, g.to(G.dtype.element_ty), mask=offs < n_cols)


def _configs():
    # few on purpose: every config is compiled per dtype and stride specialisation
    return [triton.Config({"BLOCK_V": b}, num_warps=w)
            for b, w in ((2048, 4), (4096, 8), (8192, 8), (8192, 16))]


# Compiled GPU launches pick block size and warps per shard width and dtype (the best values
# differ between the two kernels); the interpreter runs one fixed configuration.
_row_stats_tuned = None if INTERPRETED else triton.autotune(
    _configs(), key=["vocab_end"])(_row_stats_kernel)
_grad_tuned = None if INTERPRETED else triton.autotune(
    _configs(), key=["n_cols"])(_grad_kernel)


def _block(width: int) -> int:
    return max(16, min(MAX_BLOCK_V, triton.next_power_of_2(max(width, 1))))


def row_stats(student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor | None,
              vocab_end: int, tau: float) -> torch.Tensor:
    """Same contract as `softmax_kl_torch.row_stats` (fp32 `[5, N]`)."""
    n = student.shape[0]
    stats = torch.empty(5, n, dtype=torch.float32, device=student.device)
    if n == 0:
        return stats
    args = (student, teacher, keep if keep is not None else stats, stats, n,
            student.stride(0), student.stride(1), teacher.stride(0), teacher.stride(1),
            vocab_end, 1.0 / tau)
    if _row_stats_tuned is not None and student.is_cuda:
        _row_stats_tuned[(n,)](*args, HAS_KEEP=keep is not None)
    else:
        _row_stats_kernel[(n,)](*args, HAS_KEEP=keep is not None, BLOCK_V=_block(vocab_end))
    return stats


def grad(student: torch.Tensor, teacher: torch.Tensor, lse_s: torch.Tensor, lse_t: torch.Tensor,
         coef: torch.Tensor, vocab_end: int, tau: float) -> torch.Tensor:
    """Same contract as `softmax_kl_torch.grad`."""
    n, v = student.shape
    out = torch.empty((n, v), dtype=student.dtype, device=student.device)
    if n == 0:
        return out
    args = (student, teacher, out, (lse_s * LOG2E).float().contiguous(),
            (lse_t * LOG2E).float().contiguous(), coef.float().contiguous(),
            student.stride(0), student.stride(1), teacher.stride(0), teacher.stride(1),
            out.stride(0), v, vocab_end, LOG2E / tau)
    if _grad_tuned is not None and student.is_cuda:
        _grad_tuned[(n,)](*args)
    else:
        _grad_kernel[(n,)](*args, BLOCK_V=_block(v))
    return out

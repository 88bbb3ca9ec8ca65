"""The sharded algebra of `softmax_kl`: per-rank row statistics and their exact combination.

Why not `KL = C/L_t + (M_s - M_t) + (log L_s - log L_t)` (the first version): its terms have the
size of the log-sum-exps, so in fp32 the loss value carries an absolute error of about
|lse| * 2^-24 * tau^2, which is larger than the KL itself once the student is close to the
teacher (measured: 9e-4 relative at tau = 15 and logit noise 0.1, 6-15x at noise 0.001).

Per row, with a = s/tau, b = t/tau and d = a - b: KL(p_t || p_s) = log E[e^d] - E[d], where E is
the expectation under the teacher p_t. With x = d - mu for any reference mu, X = E[x],
F = E[f(x)] and f(x) = e^x - 1 - x >= 0:

    KL = log1p(X + F) - X = F - g(X + F),    g(y) = y - log1p(y) >= 0.

With mu near E[d], X is close to 0 and F ~ Var(x)/2 ~ KL: the loss is a difference of two
non-negative terms that do not cancel (F - g(Y) with g(Y) ~ X^2/2 ~ 0), each evaluated without
cancellation (`f_wide`, `g_wide`), so it keeps its relative precision as KL -> 0. Where
|Y| = |X + F| >= 0.5 (a large KL) the same value is taken as log1p(Y) - X, which does not cancel
there while F - g(Y) would. A constant shift of the student's logits cancels exactly: x is formed
from s - t as an exact sum of two floats minus the same pair at a reference column.

Each rank r reports, per row, over its real columns (the `[9, N]` contract of both paths):

    0 m_s   max a                 1 l_s   sum exp(a - m_s)
    2 m_t   max b                 3 l_t   sum exp(b - m_t)
    4 r_hi, 5 r_lo  the reference logit difference s_k - t_k = r_hi + r_lo exactly (any column k)
    6 nu    a shift in tau units: mu = (r_hi + r_lo)/tau + nu (near the shard's E[d])
    7 x     sum exp(b - m_t) (d - mu)      8 f     sum exp(b - m_t) f(d - mu)

`combine` rescales each shard to the global maxima and moves it to one reference exactly
(x -> x + D: X' = X + D W, F' = e^D F + expm1(D) X + f(D) W, W the shard's teacher mass), in fp64
on `[world, N]` values. It also evaluates the first form, `Lambda = lse_s - lse_t - mu` for
log E[e^x] with an absolute error of a few eps * |lse|, and keeps the precise form only where the
two agree within that bound: where they do not, the teacher's weight underflowed on columns that
hold the student's mass (|logit gaps| ~ 100 tau) or F overflowed, the KL is large, and the
absolute-error form is the accurate one. The gradient needs only lse_s and lse_t.

Communication is ONE all-gather of the `[9, N]` statistics into `[world, 9, N]`. A max-then-sum
scheme (as Megatron's vocab-parallel cross-entropy) needs two collectives; the all-gather is one
round of latency, its payload (9 N world floats) is negligible next to the N V_r logits, and
every rank combines the same numbers in the same order, so the loss and the log-sum-exps are
bit-identical on all ranks.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

N_STATS = 9
# (combined in fp64) the precise form is kept where it agrees with lse_s - lse_t - mu within
# this many eps (of the statistics' dtype) times the magnitudes that form is made of
AGREEMENT_EPS = 16


def group_size(group) -> int:
    """1 when `group` is None (the vocabulary is local) or has one rank."""
    if group is None:
        return 1
    return dist.get_world_size(group)


def gather(stats: torch.Tensor, group) -> torch.Tensor:
    """`[9, N]` local statistics -> `[world, 9, N]` statistics of every rank of `group`."""
    world = group_size(group)
    if world == 1:
        return stats.unsqueeze(0)
    rows, n = stats.shape
    # the concatenated form ([world * 9, N]) is the one every backend (gloo too) accepts
    out = torch.empty((world * rows, n), dtype=stats.dtype, device=stats.device)
    all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    all_gather(out, stats.contiguous(), group=group)
    return out.view(world, rows, n)


def _safe(m: torch.Tensor) -> torch.Tensor:
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)


def _horner(x: torch.Tensor, coefficients) -> torch.Tensor:
    out = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


_F_TAYLOR = [1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320]
_G_TAYLOR = [1.0 / 2, -1.0 / 3, 1.0 / 4, -1.0 / 5, 1.0 / 6, -1.0 / 7, 1.0 / 8, -1.0 / 9]


def f_wide(x: torch.Tensor) -> torch.Tensor:
    """e^x - 1 - x (>= 0) in fp64 to ~1e-13 relative: Taylor below |x| = 0.01 (truncation
    x^9/9! ~ 3e-24 relative), expm1(x) - x above (cancellation at most 2/|x| = 200 eps)."""
    small = x * x * _horner(x, _F_TAYLOR)
    return torch.where(x.abs() < 0.01, small, torch.expm1(x) - x)


def g_wide(y: torch.Tensor) -> torch.Tensor:
    """y - log1p(y) (>= 0 for y > -1) in fp64, the same way as `f_wide`."""
    small = y * y * _horner(y, _G_TAYLOR)
    return torch.where(y.abs() < 0.01, small, y - torch.log1p(y))


def combine(stats_all: torch.Tensor, tau: float):
    """`[world, 9, N]` statistics -> (kl, lse_s, lse_t), each `[N]` in the statistics' dtype,
    tau-scaled units (kl without the tau^2 factor). Rows without teacher mass give NaN (the
    caller drops masked rows)."""
    out_dtype = stats_all.dtype
    m_s, l_s, m_t, l_t, r_hi, r_lo, nu, x, f = stats_all.to(torch.float64).unbind(1)
    big_m_s = _safe(m_s.amax(0))
    big_m_t = _safe(m_t.amax(0))
    big_l_s = (l_s * torch.exp(m_s - big_m_s)).sum(0)
    omega = torch.exp(m_t - big_m_t)  # an empty shard (m = -inf) weighs 0
    w = l_t * omega  # each shard's teacher mass, globally rescaled
    big_l_t = w.sum(0)
    log_l_s, log_l_t = torch.log(big_l_s), torch.log(big_l_t)
    live = w > 0
    zero = torch.zeros_like(w)
    x_r = torch.where(live, x * omega, zero)
    f_r = torch.where(live, f * omega, zero)

    # one reference for the row: the shard with the most teacher mass, then its exact centre
    ref = w.argmax(0, keepdim=True)

    def pick(z):
        return z.gather(0, ref).squeeze(0)

    delta = ((r_hi - pick(r_hi)) + (r_lo - pick(r_lo))) / tau + (nu - pick(nu))
    delta = torch.where(live, delta, zero)
    shift = (x_r + delta * w).sum(0) / big_l_t
    delta = delta - shift
    big_x = (x_r + delta * w).sum(0) / big_l_t  # ~0 up to rounding
    moved = (torch.where(f_r > 0, torch.exp(delta) * f_r, zero)
             + torch.where(x_r != 0, torch.expm1(delta) * x_r, zero) + f_wide(delta) * w)
    big_f = torch.where(live, moved, zero).sum(0) / big_l_t
    mu = (pick(r_hi) + pick(r_lo)) / tau + pick(nu) + shift

    big_y = big_x + big_f  # E[e^x] - 1
    # KL = log1p(Y) - X: as F - g(Y) where both are small (no cancellation), as written where
    # Y is not small (there F - g(Y) would cancel)
    kl_small = torch.where(big_y.abs() < 0.5, big_f - g_wide(big_y), torch.log1p(big_y) - big_x)
    lam_big = (big_m_s - big_m_t) + (log_l_s - log_l_t) - mu  # log E[e^x], absolute error
    kl_big = lam_big - big_x
    scale = big_m_s.abs() + big_m_t.abs() + mu.abs() + log_l_s.abs() + log_l_t.abs() + 1.0
    bound = AGREEMENT_EPS * torch.finfo(out_dtype).eps * scale
    agree = (torch.log1p(big_y) - lam_big).abs() <= bound
    kl = torch.where(torch.isfinite(kl_small) & agree, kl_small, kl_big).clamp_min(0.0)
    return (kl.to(out_dtype), (big_m_s + log_l_s).to(out_dtype),
            (big_m_t + log_l_t).to(out_dtype))

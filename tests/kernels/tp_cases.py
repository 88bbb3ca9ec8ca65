"""Tensor-parallel softmax_kl cases, shared by the gloo tests of both paths.

`run_cases(rank, world, cases)` runs on every rank (under tests.distributed.run_distributed):
each rank builds the same full-vocabulary logits, keeps its padded shard and returns its loss
and its shard's gradient; `check(results, cases)` compares them with the full-vocabulary
reference in the parent.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from kernels import softmax_kl
from kernels.softmax_kl import backend_name
from tests.kernels.reference import assert_close_grad, grad_atol, reference, shard

GRAD_RTOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def make_case(n, v, width, dtype=torch.float32, tau=15.0, reduction="sum", masked=True, seed=0,
              noise=None, shift=0.0):
    """One case: n tokens over a true vocabulary of v columns split into shards of `width`.

    noise: None -> independent student and teacher logits; a number -> the student is the
    teacher plus Gaussian noise of that scale plus the constant `shift` (a KL near 0, where the
    loss value must keep its relative precision: `check` then compares row by row, relatively).
    """
    return dict(n=n, v=v, width=width, dtype=dtype, tau=tau, reduction=reduction,
                masked=masked, seed=seed, noise=noise, shift=shift)


def near_teacher(n, v, width, tau, noise, shift, seed=0):
    """student = teacher + noise + shift in fp32; fp32 logits of scale 3 around 4."""
    return make_case(n, v, width, tau=tau, reduction="none", masked=False, seed=seed,
                     noise=noise, shift=shift)


# Relative error bound of each row's loss value, when the student is near the teacher. Error
# analysis (kernels/softmax_kl_stats.py): every term of F = E[f(x)] (~ KL) and of the centred
# X carries a few ulps (x = d - mu formed exactly up to its own rounding, f within 5e-8 relative,
# the teacher's weights exp(b - m) within ~|b| ulps, about 20 here, each summand rounded once),
# and F - g(X + F) loses at most a factor 1 + X^2/Var(x), ~1 with mu at the teacher-weighted
# mean: about 80 ulps of fp32 = 1e-5 in all. That is the bound at noise 1e-1 and 1e-2,
# and 100x tighter than its 1e-3 at noise 1e-3.
NEAR_TEACHER_RTOL = 1e-5


def _inputs(case):
    g = torch.Generator().manual_seed(case["seed"])
    if case["noise"] is not None:
        t = torch.randn(case["n"], case["v"], generator=g) * 3 + 4
        s = t + case["noise"] * torch.randn(case["n"], case["v"], generator=g) + case["shift"]
        return s.to(case["dtype"]), t.to(case["dtype"]), None, None
    s = (torch.randn(case["n"], case["v"], generator=g) * 4).to(case["dtype"])
    t = (torch.randn(case["n"], case["v"], generator=g) * 4 + 1).to(case["dtype"])
    mask = (torch.rand(case["n"], generator=g) > 0.25) if case["masked"] else None
    upstream = torch.rand(case["n"], generator=g) + 0.5
    return s, t, mask, upstream


def run_cases(rank, world, cases, expected_backend):
    out = []
    for case in cases:
        s, t, mask, upstream = _inputs(case)
        s_r, vocab_end = shard(s, rank, world, case["width"], pad_value=3e4)
        t_r, _ = shard(t, rank, world, case["width"], pad_value=-3e4)
        assert backend_name(s_r, t_r) == expected_backend
        student = s_r.clone().requires_grad_(True)
        loss = softmax_kl(student, t_r, temperature=case["tau"], mask=mask,
                          group=dist.group.WORLD, vocab_end=vocab_end,
                          reduction=case["reduction"])
        if case["reduction"] == "none":
            loss.backward(torch.ones_like(loss) if upstream is None else upstream.to(loss.dtype))
        else:
            loss.backward()
        out.append(dict(loss=loss.detach(), grad=student.grad, vocab_end=vocab_end))
    return out


def check(results, cases):
    for i, case in enumerate(cases):
        s, t, mask, upstream = _inputs(case)
        rows, grad = reference(s, t, temperature=case["tau"], mask=mask,
                               upstream=upstream if case["reduction"] == "none" else None)
        if case["reduction"] == "none":
            expected = rows
        else:
            count = case["n"] if mask is None else int(mask.sum())
            divisor = max(count, 1) if case["reduction"] == "mean" else 1
            expected, grad = rows.sum() / divisor, grad / divisor
        losses = [r[i]["loss"] for r in results]
        for loss in losses[1:]:  # one combination order on every rank: identical losses
            assert torch.equal(loss, losses[0]), f"case {i}: ranks disagree on the loss"
        if case["noise"] is not None:
            check_relative(losses[0], rows, f"case {i} ({case})")
        else:
            torch.testing.assert_close(losses[0].double(), expected, rtol=1e-5,
                                       atol=1e-5 * float(rows.abs().sum()) + 1e-9)
        width = case["width"]
        for rank, r in enumerate(results):
            ve = r[i]["vocab_end"]
            g = r[i]["grad"]
            assert g.dtype == case["dtype"] and g.shape == (case["n"], width)
            assert torch.all(g[:, ve:] == 0), f"case {i} rank {rank}: padding got a gradient"
            expected_g = grad[:, rank * width: rank * width + ve]
            if case["noise"] is not None:
                check_near_teacher_grad(g[:, :ve], expected_g, s, t, case["tau"])
            else:
                assert_close_grad(g[:, :ve], expected_g, GRAD_RTOL[case["dtype"]])


def check_relative(loss, rows, what):
    """Every row's loss value within NEAR_TEACHER_RTOL of the fp64 reference, relatively."""
    assert torch.all(rows > 0), "the reference KL must be positive for a relative check"
    rel = ((loss.double() - rows).abs() / rows).max().item()
    assert rel <= NEAR_TEACHER_RTOL, f"{what}: relative error {rel:.2e} > {NEAR_TEACHER_RTOL}"
    return rel


def check_near_teacher_grad(g, expected, s, t, tau):
    """The gradient tau (p_s - p_t) where p_s ~ p_t: its error is relative to p, not to the
    difference (`reference.grad_atol`; fp32 logits of 3000 carry 1e-4 themselves)."""
    bound = grad_atol(s, t, tau, 1.0)
    err = float((g.double() - expected).abs().max())
    assert err <= bound, f"gradient error {err:.2e} > {bound:.2e}"

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
from tests.kernels.reference import assert_close_grad, reference, shard

GRAD_RTOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def make_case(n, v, width, dtype=torch.float32, tau=15.0, reduction="sum", masked=True, seed=0):
    """One case: n tokens over a true vocabulary of v columns split into shards of `width`."""
    return dict(n=n, v=v, width=width, dtype=dtype, tau=tau, reduction=reduction,
                masked=masked, seed=seed)


def _inputs(case):
    g = torch.Generator().manual_seed(case["seed"])
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
            loss.backward(upstream.to(loss.dtype))
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
        torch.testing.assert_close(losses[0].double(), expected, rtol=1e-5,
                                   atol=1e-5 * float(rows.abs().sum()) + 1e-9)
        width = case["width"]
        for rank, r in enumerate(results):
            ve = r[i]["vocab_end"]
            g = r[i]["grad"]
            assert g.dtype == case["dtype"] and g.shape == (case["n"], width)
            assert torch.all(g[:, ve:] == 0), f"case {i} rank {rank}: padding got a gradient"
            assert_close_grad(g[:, :ve], grad[:, rank * width: rank * width + ve],
                              GRAD_RTOL[case["dtype"]])

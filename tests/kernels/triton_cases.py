"""softmax_kl's Triton path against the naive reference, run in a process of its own.

`TRITON_INTERPRET=1` has to be set before triton is first imported, which a pytest process that
also imports DeepSpeed cannot promise, so `test_softmax_kl_triton.py` runs this module as

    TRITON_INTERPRET=1 python -m tests.kernels.triton_cases --device cpu --json OUT

(shapes are small: the interpreter runs each program in numpy). On a GPU the same cases run
compiled: `python -m tests.kernels.triton_cases --device cuda`. Every case checks that the
Triton kernels were really launched. The JSON maps case name -> {status, detail, launches}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings

import torch

from tests.kernels.reference import assert_close_grad, grad_atol, reference

CASES = {}
NO_LAUNCH = {"fp64_takes_the_torch_path"}  # cases that check that Triton is NOT used


def case(fn):
    CASES[fn.__name__] = fn
    return fn


class _LaunchCounter:
    """Counts calls of the Triton path's two launchers (patched into the module)."""

    def __init__(self, module):
        self.count = 0
        for name in ("row_stats", "grad"):
            original = getattr(module, name)
            setattr(module, name, self._wrap(original))

    def _wrap(self, fn):
        def counted(*args, **kwargs):
            self.count += 1
            return fn(*args, **kwargs)
        return counted


LAUNCHES = None
LOSS_RTOL = {torch.float32: 1e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}
GRAD_RTOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _logits(n, v, device, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g) * scale).to(dtype)
    t = (torch.randn(n, v, generator=g) * scale + 0.5).to(dtype)
    return s.to(device), t.to(device)


def _run(s, t, **kwargs):
    """softmax_kl forward + backward on the Triton path; returns (loss, grad)."""
    from kernels import softmax_kl
    from kernels.softmax_kl import backend_name
    assert backend_name(s, t) == "triton", f"dispatch chose {backend_name(s, t)!r}"
    before = LAUNCHES.count
    student = s.detach().clone().requires_grad_(True)
    loss = softmax_kl(student, t, **kwargs)
    loss.backward(torch.ones_like(loss))
    assert LAUNCHES.count == before + 2, "the Triton kernels were not both launched"
    return loss.detach(), student.grad


def _check(s, t, *, reduction="none", temperature=1.0, mask=None, vocab_end=None,
           scale_by_t2=True, large_logits=False):
    """Compare with the reference; large_logits: the gradient's bound also allows
    `reference.grad_atol` (logits of 1e4)."""
    dtype = s.dtype
    n, v = s.reshape(-1, s.shape[-1]).shape
    ve = v if vocab_end is None else vocab_end
    loss, grad = _run(s, t, reduction=reduction, temperature=temperature, mask=mask,
                      vocab_end=vocab_end, scale_by_t2=scale_by_t2)
    s2, t2 = s.reshape(n, v).cpu(), t.reshape(n, v).cpu()
    rows, ref_grad = reference(s2[:, :ve], t2[:, :ve], temperature=temperature,
                               mask=None if mask is None else mask.cpu(), scale_by_t2=scale_by_t2)
    count = n if mask is None else int(mask.cpu().reshape(-1).bool().sum())
    if reduction == "mean":
        expected, ref_grad = rows.sum() / max(count, 1), ref_grad / max(count, 1)
    else:
        expected = rows if reduction == "none" else rows.sum()
    torch.testing.assert_close(loss.cpu().double(), expected, rtol=LOSS_RTOL[dtype],
                               atol=LOSS_RTOL[dtype] * float(rows.abs().sum()) + 1e-12)
    grad = grad.reshape(n, v).cpu()
    assert grad.dtype == dtype
    assert torch.all(grad[:, ve:] == 0), "padding columns must get exactly 0 gradient"
    atol = grad_atol(s2[:, :ve], t2[:, :ve], temperature, 1.0) if large_logits else 0.0
    assert_close_grad(grad[:, :ve], ref_grad, GRAD_RTOL[dtype], atol)
    return loss, grad


@case
def vocab_widths(device):
    for v, ve in ((1, 1), (7, 7), (7, 4), (1271, 1271), (1271, 1100)):
        s, t = _logits(6, v, device)
        mask = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool, device=device)
        _check(s, t, temperature=2.0, mask=mask, vocab_end=ve)


@case
def shard_far_wider_than_block(device):
    """Looping over blocks, a partial last block and padding inside a block."""
    from kernels import softmax_kl_triton
    saved = softmax_kl_triton.MAX_BLOCK_V
    softmax_kl_triton.MAX_BLOCK_V = 256  # the interpreter's fixed block; GPU runs autotune
    try:
        s, t = _logits(3, 1271, device)
        _check(s, t, temperature=2.0, vocab_end=1000)
        s, t = _logits(2, 6288, device)
        _check(s, t, temperature=15.0, vocab_end=6200)
    finally:
        softmax_kl_triton.MAX_BLOCK_V = saved


@case
def single_token(device):
    s, t = _logits(1, 1271, device)
    _check(s, t, temperature=15.0)


@case
def temperatures(device):
    s, t = _logits(4, 500, device, scale=20.0)
    for tau in (1.0, 2.0, 15.0):
        for scale_by_t2 in (True, False):
            _check(s, t, temperature=tau, scale_by_t2=scale_by_t2)


@case
def half_precision(device):
    for dtype in (torch.bfloat16, torch.float16):
        s, t = _logits(5, 1271, device, dtype=dtype)
        mask = torch.tensor([1, 0, 1, 1, 1], device=device)
        _check(s, t, temperature=2.0, mask=mask, vocab_end=1200)


@case
def all_masked_zero_and_finite(device):
    s, t = _logits(3, 100, device)
    s[0] = float("nan")
    t[1] = float("-inf")
    s[2, :3] = float("inf")
    for reduction in ("none", "sum", "mean"):
        loss, grad = _run(s, t, mask=torch.zeros(3, dtype=torch.bool, device=device),
                          reduction=reduction)
        assert torch.all(loss == 0) and torch.all(grad == 0)
    # the same garbage next to live rows
    clean_s, clean_t = _logits(3, 100, device)
    s[1], t[1] = clean_s[1], clean_t[1]
    mask = torch.tensor([0, 1, 0], dtype=torch.bool, device=device)
    loss, grad = _run(s, t, mask=mask, reduction="none")
    rows, ref_grad = reference(clean_s.cpu(), clean_t.cpu(), mask=mask.cpu())
    torch.testing.assert_close(loss.cpu().double(), rows, rtol=1e-5, atol=1e-6)
    assert_close_grad(grad.cpu(), ref_grad, 1e-5)


@case
def reductions(device):
    s, t = _logits(6, 300, device)
    mask = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool, device=device)
    for reduction in ("none", "sum", "mean"):
        _check(s, t, temperature=2.0, mask=mask, reduction=reduction)
    upstream = torch.rand(6, device=device) + 0.5  # per-row upstream gradient of "none"
    from kernels import softmax_kl
    student = s.clone().requires_grad_(True)
    softmax_kl(student, t, temperature=2.0, reduction="none").backward(upstream)
    _, ref_grad = reference(s.cpu(), t.cpu(), temperature=2.0, upstream=upstream.cpu())
    assert_close_grad(student.grad.cpu(), ref_grad, 1e-5)


@case
def extreme_logits_stay_finite(device):
    s, t = _logits(5, 600, device)
    s[0, ::2], s[0, 1::2] = 1e4, -1e4
    t[0, ::3] = 1e4
    t[1, :] = -1e4
    t[1, 7] = 1e4
    s[2:4, 100:200] = float("-inf")
    t[2:4, 100:200] = float("-inf")
    t[4, 300:310] = float("-inf")
    for tau in (1.0, 15.0):
        loss, grad = _check(s, t, temperature=tau, large_logits=True)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert torch.all(grad[2:4, 100:200] == 0)


@case
def strided_inputs(device):
    s, t = _logits(4, 1500, device)
    _check(s[:, 100:1371], t[:, 50:1321], temperature=2.0, vocab_end=1200)  # row stride 1500
    _check(s[:, ::2], t[:, 1::2], temperature=2.0)  # column stride 2
    s3, t3 = s[:, :600].reshape(2, 2, 600), t[:, :600].reshape(2, 2, 600)  # [B, L, V]
    _check(s3, t3, mask=torch.tensor([[1, 0], [1, 1]], device=device), reduction="mean")


@case
def agrees_with_torch_path(device):
    """Both paths on the same inputs (the PyTorch path is run directly, on the CPU)."""
    from kernels import softmax_kl_stats, softmax_kl_torch
    s, t = _logits(5, 1271, device, scale=5.0)
    loss, grad = _run(s, t, temperature=3.0, vocab_end=1250, reduction="none")
    stats = softmax_kl_torch.row_stats(s.cpu(), t.cpu(), None, 1250, 3.0)
    kl, lse_s, lse_t = softmax_kl_stats.combine(stats[None], 3.0)
    torch.testing.assert_close(loss.cpu(), kl * 9.0, rtol=1e-5, atol=1e-6)
    g = softmax_kl_torch.grad(s.cpu(), t.cpu(), lse_s, lse_t, torch.full((5,), 3.0), 1250, 3.0)
    assert_close_grad(grad.cpu(), g.double(), 1e-5)


@case
def near_teacher_precision(device):
    """The loss value keeps its relative precision as KL -> 0 (tests/kernels/tp_cases.py):
    noise 1e-1..1e-3, tau 1 and 15, constant shifts, a padded shard, three blocks per row."""
    import itertools

    from kernels import softmax_kl_triton
    from tests.kernels import tp_cases
    from tests.kernels.reference import shard
    saved = softmax_kl_triton.MAX_BLOCK_V
    softmax_kl_triton.MAX_BLOCK_V = 256  # the reference comes from the first of three blocks
    try:
        for i, (noise, tau, shift) in enumerate(itertools.product(
                (1e-1, 1e-2, 1e-3), (1.0, 15.0), (0.0, 1000.0, -3000.0))):
            c = tp_cases.near_teacher(3, 600, 608, tau, noise, shift, seed=i)
            s, t, _, _ = tp_cases._inputs(c)
            s_pad, vocab_end = shard(s, 0, 1, 608, pad_value=3e4)
            t_pad, _ = shard(t, 0, 1, 608, pad_value=-3e4)
            loss, _ = _run(s_pad.to(device), t_pad.to(device), temperature=tau,
                           vocab_end=vocab_end, reduction="none")
            rows, _ = reference(s, t, temperature=tau)
            tp_cases.check_relative(loss.cpu(), rows, str(c))
    finally:
        softmax_kl_triton.MAX_BLOCK_V = saved


@case
def fp64_takes_the_torch_path(device):
    """fp64 is a reference dtype: the PyTorch path, even where Triton is available."""
    from kernels import softmax_kl
    from kernels.softmax_kl import backend_name
    s, t = _logits(3, 50, device, dtype=torch.float64)
    assert backend_name(s, t) == "torch" and backend_name(s.float(), t) == "torch"
    assert backend_name(s.float(), t.float()) == "triton"
    before = LAUNCHES.count
    student = s.clone().requires_grad_(True)
    loss = softmax_kl(student, t, temperature=2.0, reduction="none")
    loss.sum().backward()
    assert LAUNCHES.count == before
    rows, grad = reference(s.cpu(), t.cpu(), temperature=2.0)
    torch.testing.assert_close(loss.cpu(), rows, rtol=1e-10, atol=1e-12)
    assert_close_grad(student.grad.cpu(), grad, 1e-10)


def _tp_worker(rank, world, cases):
    from tests.kernels import tp_cases
    warnings.simplefilter("ignore", RuntimeWarning)  # numpy's inf - inf in the interpreter
    global LAUNCHES
    from kernels import softmax_kl_triton
    LAUNCHES = _LaunchCounter(softmax_kl_triton)
    out = tp_cases.run_cases(rank, world, cases, "triton")
    assert LAUNCHES.count == 2 * len(cases), "the Triton kernels were not launched"
    return out, LAUNCHES.count


@case
def tensor_parallel_2_ranks(device):
    if device != "cpu":
        raise NotImplementedError("gloo TP case runs on the CPU only (one GPU here)")
    from tests.distributed import run_distributed
    from tests.kernels import tp_cases
    cases = [tp_cases.make_case(5, 2 * 300 - 41, 300),
             tp_cases.make_case(4, 2 * 200 - 7, 200, dtype=torch.bfloat16, tau=2.0,
                                reduction="none"),
             tp_cases.near_teacher(3, 2 * 304 - 25, 304, 15.0, 1e-3, 1000.0),
             tp_cases.near_teacher(3, 2 * 304 - 25, 304, 1.0, 1e-2, 0.0, seed=1)]
    results = run_distributed(2, _tp_worker, cases)
    tp_cases.check([out for out, _ in results], cases)
    LAUNCHES.count += sum(count for _, count in results)


def main(argv=None):
    global LAUNCHES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write per-case results here")
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("CPU tensors need TRITON_INTERPRET=1 in the environment")
    torch.manual_seed(0)
    from kernels import softmax_kl_triton
    if args.device == "cpu":
        assert softmax_kl_triton.INTERPRETED, "triton did not start in interpret mode"
    LAUNCHES = _LaunchCounter(softmax_kl_triton)
    results = {}
    for name in args.only or CASES:
        before = LAUNCHES.count
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # numpy's inf - inf in the interpreter
                CASES[name](args.device)
            results[name] = dict(status="ok", detail="", launches=LAUNCHES.count - before)
        except NotImplementedError as e:
            results[name] = dict(status="not run", detail=str(e), launches=0)
        except Exception:  # noqa: BLE001 - report every failure, keep going
            results[name] = dict(status="failed", detail=traceback.format_exc(),
                                 launches=LAUNCHES.count - before)
        print(f"{results[name]['status']:8s} {name}", flush=True)
        if results[name]["status"] == "failed":
            print(results[name]["detail"], flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(r["status"] != "failed" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

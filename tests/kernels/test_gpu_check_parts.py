"""The CPU-testable pieces of gpu_check.sh's kernel-level parts: the chunked fp64 reference and the
pass criteria of the kernel part, the bandwidth part's byte count and launch recording, the NCCL
part's checks (on gloo, under NCCL's dtype rule). The stage-0 slice: tests/tools/test_gpu_check_stage.py."""
import subprocess
import sys
import types

import pytest
import torch

from kernels.benchmarks import gpu_check_bandwidth as bandwidth
from kernels.benchmarks import gpu_check_kernel as kernel
from kernels.benchmarks import gpu_check_nccl as nccl
from tests.kernels.reference import reference
from tests.nccl_rules import NCCL_DTYPES


def _inputs(n=13, v=40, vocab_end=33, seed=0):
    s, t, _ = kernel.make_inputs(n, v, vocab_end, dtype=torch.float64, device="cpu", seed=seed)
    keep = torch.ones(n, dtype=torch.bool)
    keep[[2, 7]] = False
    return s, t, keep


@pytest.mark.parametrize("tau", [1.0, 15.0])
@pytest.mark.parametrize("chunk_rows", [1, 4, 13, 100])
def test_chunked_reference_equals_the_naive_formula(tau, chunk_rows):
    s, t, keep = _inputs()
    chunks = list(kernel.reference_chunks(s, t, keep, 33, tau, chunk_rows))
    assert [(r0, r1) for r0, r1, _, _ in chunks] == [(r, min(13, r + chunk_rows)) for r in range(0, 13, chunk_rows)]
    loss = torch.cat([c[2] for c in chunks])
    grad = torch.cat([c[3] for c in chunks])
    ref_loss, ref_grad = reference(s[:, :33], t[:, :33], temperature=tau, mask=keep)   # autograd, fp64
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-15 * float(ref_loss.abs().max()))
    # τ(p_s − p_t) cancels: fp64 rounding of p (~1e-16 relative) is measured at ~1e-14 of max|grad|
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12 * float(ref_grad.abs().max()))
    assert torch.all(loss[~keep] == 0) and torch.all(grad[~keep] == 0)


def _exact_outputs(s, t, keep, vocab_end, tau):
    """The reference as a correct bf16 kernel would return it: fp32 per-row loss, bf16 gradient."""
    _, _, loss, grad = next(kernel.reference_chunks(s, t, keep, vocab_end, tau, s.shape[0]))
    full = torch.zeros(s.shape, dtype=torch.bfloat16)
    full[:, :vocab_end] = grad.to(torch.bfloat16)
    return loss.float(), full


def test_pass_criteria_accept_a_correct_kernel_and_flag_each_kind_of_wrong_one():
    s, t, keep = _inputs(n=50)
    loss, grad = _exact_outputs(s, t, keep, 33, 15.0)
    ok = kernel.errors(loss, grad, s, t, keep, 33, 15.0, chunk_rows=7)
    assert kernel.verdict(ok) == [], ok
    scale = float(grad.double().abs().max())

    def flagged(loss=loss, grad=grad):
        return kernel.verdict(kernel.errors(loss, grad, s, t, keep, 33, 15.0, chunk_rows=7))

    assert flagged(loss=loss * (1 + 3e-5)) == ["loss_sum_rel_err > 1e-05", "loss_row_max_rel_err > 1e-05"]
    one_row = loss.clone()
    one_row[5] += 2e-5 * (float(one_row[5]) + float(loss[keep].mean()))
    assert flagged(loss=one_row) == ["loss_row_max_rel_err > 1e-05"]
    bad = grad.clone()
    bad[4, 3] += 0.05 * scale
    assert flagged(grad=bad) == ["grad_within_rtol"]
    masked = grad.clone()
    masked[2, 0] = 1e-3
    assert "masked_rows_zero" in flagged(grad=masked)
    padded = grad.clone()
    padded[0, 35] = 1e-3
    assert flagged(grad=padded) == ["padding_grad_zero"]
    nan = grad.clone()
    nan[1, 1] = float("nan")
    assert "finite" in flagged(grad=nan)


def test_the_public_api_passes_in_fp64_and_fails_when_it_reads_the_padding():
    s, t, keep = _inputs(n=20)
    loss, grad = kernel.run_softmax_kl(s, t, keep, 33, 15.0)
    assert kernel.verdict(kernel.errors(loss, grad, s, t, keep, 33, 15.0)) == []
    t[:, 33:] = 0.0   # student padding 1e4, teacher's 0: the two distributions differ there
    loss, grad = kernel.run_softmax_kl(s, t, keep, 40, 15.0)   # padding taken as vocabulary
    failed = kernel.verdict(kernel.errors(loss, grad, s, t, keep, 33, 15.0))
    assert {"grad_within_rtol", "padding_grad_zero", "loss_sum_rel_err > 1e-05"} <= set(failed)


def _fake_kernels(configs=("c1", "c2"), takes_config=True):
    if takes_config:
        return types.SimpleNamespace(CONFIGS=list(configs), row_stats=lambda *a, config=None: ("rs", a, config),
                                     grad=lambda *a, config=None: ("g", a, config))
    return types.SimpleNamespace(CONFIGS=list(configs), row_stats=lambda *a: ("rs", a), grad=lambda *a: ("g", a))


def test_every_config_is_forced_then_restored():
    module = _fake_kernels()
    configs, note = kernel.kernel_configs(module)
    assert note is None and configs == [("c1", "c1"), ("c2", "c2"), ("autotuned", None)]
    with kernel.forced_config(module, "c2"):
        assert module.row_stats(1) == ("rs", (1,), "c2") and module.grad(2) == ("g", (2,), "c2")
    assert module.row_stats(1) == ("rs", (1,), None)
    with kernel.forced_config(module, None):   # the autotuned default: no config passed at all
        assert module.grad(3) == ("g", (3,), None)


@pytest.mark.parametrize("module", [_fake_kernels(takes_config=False), types.SimpleNamespace(
    row_stats=lambda *a, config=None: 0, grad=lambda *a, config=None: 0)])
def test_without_the_config_interface_only_the_default_runs_and_it_is_said(module):
    configs, note = kernel.kernel_configs(module)
    assert configs == [("autotuned", None)] and "CONFIGS" in note


def test_the_kernel_part_forces_every_config_and_reports_each(monkeypatch):
    """The part's whole loop on the CPU: a stand-in for the Triton module (the PyTorch path, fp64,
    recording the config it is given), so every row passes and every config must reach it."""
    import argparse

    import kernels
    from kernels import softmax_kl_torch
    api = sys.modules["kernels.softmax_kl"]   # the module (the package exports the function by that name)
    seen = []

    def row_stats(*args, config=None):
        seen.append(("row_stats", config))
        return softmax_kl_torch.row_stats(*args)

    def grad(*args, config=None):
        seen.append(("grad", config))
        return softmax_kl_torch.grad(*args)

    fake = types.SimpleNamespace(CONFIGS=["c1", "c2"], row_stats=row_stats, grad=grad)
    monkeypatch.setattr(kernels, "softmax_kl_triton", fake, raising=False)
    monkeypatch.setitem(sys.modules, "kernels.softmax_kl_triton", fake)
    monkeypatch.setattr(api, "backend_name", lambda *a: "triton")
    cases = [dict(n=30, v=48, vocab_end=41, tau=15.0), dict(n=20, v=32, vocab_end=32, tau=1.0)]
    result = kernel.run(argparse.Namespace(), cases=cases, device="cpu", dtype=torch.float64)
    assert result["status"] == "ok" and result["note"] is None, result
    assert [(r["vocab_end"], r["config"], r["status"]) for r in result["cases"]] == [
        (ve, c, "ok") for ve in (41, 32) for c in ("c1", "c2", "autotuned")]
    assert seen == [(f, c) for _ in cases for c in ("c1", "c2", None) for f in ("row_stats", "grad")]
    assert result["headline"]["cases"] == 6 and result["headline"]["failed"] == 0


def test_kernel_bytes_is_the_minimum_traffic():
    # bf16, the TP=2 last rank: both inputs' 25049 real columns read by each kernel, 25216 written
    assert bandwidth.kernel_bytes(512, 25216, 25049, 2) == {"row_stats": 2 * 512 * 25049 * 2,
                                                            "grad": 2 * 512 * 25049 * 2 + 512 * 25216 * 2}
    assert bandwidth.kernel_bytes(10, 64, 60, 4, kept_rows=7) == {"row_stats": 2 * 7 * 60 * 4,
                                                                 "grad": 2 * 7 * 60 * 4 + 10 * 64 * 4}


def test_launches_are_recorded_once_and_the_module_restored():
    module = types.SimpleNamespace(row_stats=lambda *a, **k: ("rs", a, k), grad=lambda *a, **k: ("g", a, k))
    originals = module.row_stats, module.grad
    with bandwidth.recorded_launches(module) as calls:
        assert module.row_stats(1, x=2) == ("rs", (1,), {"x": 2})
        module.row_stats(3)
        module.grad(4)
    assert (module.row_stats, module.grad) == originals
    assert calls["row_stats"] == (originals[0], (1,), {"x": 2}) and calls["grad"] == (originals[1], (4,), {})


def test_nccl_checks_use_nccl_dtypes_only():
    for name, (op, dtype, _, _) in nccl.CHECKS.items():
        assert op == "barrier" or dtype in NCCL_DTYPES, name


def test_a_failing_collective_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(nccl.CHECKS, "bogus", ("no_such_op", torch.float32, (2,), "nowhere"))
    row = nccl.check("bogus", torch.device("cpu"))
    assert row["status"] == "failed" and row["error"] == "ValueError: unknown operation 'no_such_op'"


GLOO_RUN = """
import argparse, json, sys
from kernels.benchmarks import gpu_check_nccl as nccl
from tests.nccl_rules import enforce_nccl_rules
names = [n for n, c in nccl.CHECKS.items() if c[0] != "p2p"]   # gloo has no send to its own rank
with enforce_nccl_rules("cpu"):
    result = nccl.run(argparse.Namespace(backend="gloo", out=sys.argv[1]), names)
print(json.dumps({n: r["status"] for n, r in result["checks"].items()}))
"""


def test_nccl_checks_round_trip_on_a_one_rank_gloo_group(tmp_path):
    proc = subprocess.run([sys.executable, "-c", GLOO_RUN, str(tmp_path / "nccl.json")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    assert len(statuses) == sum(c[0] != "p2p" for c in nccl.CHECKS.values()) and set(statuses.values()) == {"ok"}

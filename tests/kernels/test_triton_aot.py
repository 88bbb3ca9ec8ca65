"""softmax_kl's Triton kernels compile for A100 (sm_80) and H100/H200 (sm_90), in CI, without a GPU.

Every kernel x dtype (fp32, bf16, fp16) x mask on/off x target compiles to cubin through Triton's
ahead-of-time path (`kernels/softmax_kl_aot.py`), the autotune configs spread across the cases
(the whole grid: `python -m kernels.benchmarks.aot_softmax_kl`). Each cubin must use no local
memory (no register spills), and on the padded last rank (`vocab_end` with no divisibility, as
50265 - offset is) the inputs must be read with 128-bit `ld.global.v4` loads. A control compiles
the first version's load mask and must show the scalar loads the check exists to catch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels.benchmarks.aot_softmax_kl import SCALAR_INPUT_LOADS

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ("sm_80", "sm_90")
DTYPES = ("fp32", "bf16", "fp16")
SCALAR = {"fp32": "ld.global.b32", "bf16": "ld.global.b16", "fp16": "ld.global.b16"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aot")
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp / "cache"), TRITON_DEFAULT_FP_FUSION="1")
    env.pop("TRITON_INTERPRET", None)  # the interpreter would replace the compiler
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    out = tmp / "aot.json"
    proc = subprocess.run([sys.executable, "-m", "kernels.benchmarks.aot_softmax_kl", "--spread",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if not out.exists():
        pytest.fail(f"aot_softmax_kl wrote no results (exit {proc.returncode})\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _cases(compiled, kernel):
    return [c for c in compiled["cases"] if c["kernel"] == kernel]


@pytest.mark.parametrize("kernel,masks", [("row_stats", (False, True)), ("grad", (False,))])
def test_every_dtype_mask_and_target_compiles_without_spills(compiled, kernel, masks):
    from kernels.softmax_kl_triton import CONFIGS
    cases = _cases(compiled, kernel)
    assert {(c["dtype"], c["has_keep"], c["arch"]) for c in cases} == {
        (d, m, a) for d in DTYPES for m in masks for a in ARCHS}
    assert {(c["block_v"], c["num_warps"]) for c in cases} == {
        (c.kwargs["BLOCK_V"], c.num_warps) for c in CONFIGS}, "every autotune config, somewhere"
    for c in cases:
        assert "n_regs" in c, c["problems"]
        assert c["local_bytes"] == 0 and c["stack_bytes"] == 0, f"register spills: {c}"
        assert 0 < c["n_regs"] <= 255


@pytest.mark.parametrize("kernel", ["row_stats", "grad"])
def test_padded_rank_loads_are_128_bit_vectors(compiled, kernel):
    for c in _cases(compiled, kernel):
        loads = c["loads"]
        # two inputs, each loaded in every iteration (row_stats: and once for its reference)
        assert loads.get("ld.global.v4.b32", 0) >= 2, loads
        scalar = loads.get(SCALAR[c["dtype"]], 0)
        if c["dtype"] == "fp32" and kernel == "grad":
            scalar -= 3  # the row's coefficient and two log-sum-exps
        assert scalar <= SCALAR_INPUT_LOADS[kernel], f"scalar input loads: {c}"


def test_the_check_catches_unaligned_mask_bounds(compiled):
    control = compiled["control_unaligned_mask"]
    assert not any(form.startswith("ld.global.v4") for form in control["loads"]), control
    assert control["loads"].get("ld.global.b16", 0) >= 8, control
    assert control["problems"], "the script's own check must flag the control"

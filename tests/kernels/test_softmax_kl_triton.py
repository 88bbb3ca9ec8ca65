"""softmax_kl's Triton kernels, interpreted on the CPU (TRITON_INTERPRET=1) in a subprocess.

The cases live in `triton_cases.py`; one subprocess runs them all (so that triton is imported
there for the first time, in interpret mode) and each case is reported here as its own test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels import triton_cases

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    out = tmp_path_factory.mktemp("triton_cases") / "results.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.kernels.triton_cases", "--device", "cpu", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if not out.exists():
        pytest.fail(f"triton_cases wrote no results (exit {proc.returncode})\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}")
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", list(triton_cases.CASES))
def test_triton_interpreted(name, interpreted):
    result = interpreted.get(name)
    assert result is not None, f"case {name} did not run"
    assert result["status"] == "ok", result["detail"]
    if name not in triton_cases.NO_LAUNCH:
        assert result["launches"] >= 2, "the Triton kernels were not launched"

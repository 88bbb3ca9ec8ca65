"""Peak extra memory of softmax_kl's PyTorch path, measured by the OS (peak RSS of one step).

Uses the benchmark's probe (a fresh subprocess per variant; see
kernels/benchmarks/bench_softmax_kl.py): the kernel's forward + backward may add the gradient
buffer plus its per-thread chunk buffers, nothing of size [N, V] in fp32 beyond that.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import softmax_kl_torch

ROOT = Path(__file__).resolve().parents[2]
N, V = 2048, 12576
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _peak_bytes(variant):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "kernels.benchmarks.bench_softmax_kl", "--_probe", variant,
         str(N), str(V), "fp32", "15.0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1])


def test_peak_memory_is_the_gradient_plus_chunks():
    grad_bytes = N * V * 4
    chunk_bytes = softmax_kl_torch.CHUNK_ELEMENTS * 4
    ours = _peak_bytes("glmd")
    naive = _peak_bytes("naive")
    assert ours <= grad_bytes + 2 * 3 * chunk_bytes + (8 << 20), (ours, grad_bytes)
    assert naive >= 3 * grad_bytes, "the probe no longer sees the naive formula's temporaries"
    assert ours <= 0.3 * naive, (ours, naive)

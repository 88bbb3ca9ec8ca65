"""kernels/benchmarks/gpu_check.sh on the CPU: its refusal, its budget, its orchestration (every part
runs, whatever failed before) and the summary it writes."""
import json
import os
import re
import subprocess
import sys

import pytest

from kernels.benchmarks import gpu_check_summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "kernels", "benchmarks", "gpu_check.sh")
PARTS = ["kernel", "bandwidth", "nccl", "stage_eager", "engine_smoke", "stage_compiled"]


def _run(args, env=None, timeout=120):
    full = {**os.environ, "PYTHONPATH": ROOT, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=full, timeout=timeout)


def test_refuses_without_cuda_in_one_line_before_any_work(tmp_path):
    out = tmp_path / "out"
    proc = _run([str(out)], env={"CUDA_VISIBLE_DEVICES": ""})   # no GPU, even on a GPU machine
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: gpu_check: torch.cuda.is_available() is False"), lines
    assert not out.exists()


def test_refuses_without_out_dir():
    proc = _run([])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: OUT_DIR: missing (usage: bash kernels/benchmarks/gpu_check.sh OUT_DIR)"]


def test_budget_stays_under_eight_minutes():
    text = open(SCRIPT, encoding="utf-8").read()
    budget = dict(re.findall(r"\[(\w+)\]=(\d+)", re.search(r"declare -A budget=\(([^)]*)\)", text).group(1)))
    assert set(budget) == {"env", *PARTS}
    grace = int(re.search(r"timeout -k (\d+)", text).group(1))
    assert sum(map(int, budget.values())) + grace * len(budget) <= 8 * 60


FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for python: records the module, fails the kernel part without a JSON, and writes a
# JSON for every other part; the summary runs for real.
mod="$2"
echo "$*" >> "$FAKE_LOG"
if [ "$mod" = kernels.benchmarks.gpu_check_summary ]; then exec "$REAL_PYTHON" "$@"; fi
if [ "$mod" = kernels.benchmarks.gpu_check_kernel ]; then echo "kernel: boom"; exit 1; fi
prev=""
for a in "$@"; do
  if [ "$prev" = --out ] || [ "$prev" = --json ]; then
    mkdir -p "$(dirname "$a")"
    echo '{"status": "ok", "headline": {"x": 1}}' > "$a"
  fi
  prev="$a"
done
"""


def test_every_part_runs_and_the_summary_says_which_failed(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    proc = _run([str(tmp_path / "out")], env={"PYTHON": str(fake), "FAKE_LOG": str(log),
                                              "REAL_PYTHON": sys.executable})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    modules = [line.split()[1] for line in log.read_text().splitlines()]
    assert modules == ["kernels.benchmarks.gpu_check_env", "kernels.benchmarks.gpu_check_kernel",
                       "kernels.benchmarks.gpu_check_bandwidth", "kernels.benchmarks.gpu_check_nccl",
                       "tools.benchmarks.gpu_check_stage", "tests.distill.engine_smoke",
                       "tools.benchmarks.gpu_check_stage", "kernels.benchmarks.gpu_check_summary"]
    assert "--mode compiled" in log.read_text().splitlines()[6]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed"] == ["kernel"]
    assert list(summary["parts"]) == ["env", *PARTS]
    assert all(summary["parts"][p]["status"] == "ok" for p in ["env", *PARTS[1:]])
    assert (tmp_path / "out" / "kernel.log").read_text().strip() == "kernel: boom"


def _write(folder, name, obj):
    (folder / f"{name}.json").write_text(json.dumps(obj))


def test_summary_statuses(tmp_path):
    _write(tmp_path, "good", {"status": "ok", "headline": {"a": 1}})
    _write(tmp_path, "bad", {"status": "failed", "headline": {"a": 2}})
    _write(tmp_path, "says_ok_exits_1", {"status": "ok"})
    _write(tmp_path, "slow", {"status": "running", "checks": {"x": {"status": "ok"}}})
    _write(tmp_path, "absent_feature", {"status": "not run", "note": "no model.compile"})
    _write(tmp_path, "engine_smoke", {"precision": "bf16", "results": [
        {"phase": "teacher", "ok": True, "losses": [7.0, 6.0, 5.5], "seconds": 9.0}]})
    statuses = {"good": 0, "bad": 1, "says_ok_exits_1": 1, "slow": 124, "absent_feature": 0,
                "engine_smoke": 0, "missing": 1}
    summary = gpu_check_summary.summarize(str(tmp_path), statuses)
    got = {name: part["status"] for name, part in summary["parts"].items()}
    assert got == {"good": "ok", "bad": "failed", "says_ok_exits_1": "failed", "slow": "timed out",
                   "absent_feature": "not run", "engine_smoke": "ok", "missing": "failed"}
    assert summary["status"] == "failed" and summary["not_run"] == ["absent_feature"]
    assert summary["failed"] == ["bad", "says_ok_exits_1", "slow", "missing"]
    assert summary["parts"]["good"]["headline"] == {"a": 1}
    assert summary["parts"]["engine_smoke"]["headline"]["teacher"] == {
        "ok": True, "iterations": 3, "loss_first": 7.0, "loss_last": 5.5, "seconds": 9.0}
    assert "no JSON written (exit status 1)" in summary["parts"]["missing"]["note"]


def test_summary_main_writes_the_file_and_exits_by_status(tmp_path, capsys):
    _write(tmp_path, "good", {"status": "ok"})
    assert gpu_check_summary.main([str(tmp_path), "good=0"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "ok"
    assert gpu_check_summary.main([str(tmp_path), "good=0", "gone=3"]) == 1
    assert json.loads((tmp_path / "summary.json").read_text())["failed"] == ["gone"]
    assert gpu_check_summary.main([str(tmp_path), "good"]) == 2
    assert capsys.readouterr().err.strip() == "error: gpu_check_summary: 'good': expected PART=EXIT_STATUS"


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 4.8e12), ("NVIDIA H200 NVL", 4.8e12), ("NVIDIA H100 80GB HBM3", 3.35e12),
    ("NVIDIA H100 PCIe", 2.0e12), ("NVIDIA H100 NVL", 3.9e12), ("NVIDIA A100-SXM4-80GB", 2.039e12),
    ("NVIDIA A100-SXM4-40GB", 1.555e12), ("NVIDIA A100 80GB PCIe", 1.935e12), ("NVIDIA A100X", 2.0e12),
    ("NVIDIA GeForce RTX 4090", None)])
def test_hbm_peak_lookup(name, peak):
    from kernels.benchmarks.gpu_check_common import hbm_peak
    got, assumed = hbm_peak(name)
    assert got == peak
    assert name in assumed and (peak is None) == ("no HBM peak known" in assumed)

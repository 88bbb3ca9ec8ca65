"""The GPU check's end-to-end engine script works (here on the CPU, bf16, a short schedule)."""
import json
import subprocess
import sys


def test_engine_smoke_script_pretrains_then_distills_in_bf16(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, "-m", "tests.distill.engine_smoke", "--workdir", str(tmp_path / "w"),
                           "--iterations", "6", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["phase"] for r in results] == ["teacher", "student"]
    assert all(r["ok"] and len(r["losses"]) == 6 and r["losses"][-1] < r["losses"][0] for r in results)

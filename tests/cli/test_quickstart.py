"""glmd-quickstart end to end on a shortened schedule: corpus → tokenizer → data → teacher →
GLMD student → baseline → held-out table; with --compress-vocab 0.5: frequencies → artifact →
compressed GLMD student → the comparison over the kept tokens."""
import math
import os
import re
import subprocess
import sys

import yaml

from tests.cli.train_runs import DEEPSPEED_LINES


def test_quickstart_runs_the_whole_story(tmp_path):
    workdir = tmp_path / "qs"
    proc = subprocess.run([sys.executable, "-m", "megatron_glmd.cli.quickstart", "--workdir", str(workdir),
                           "--teacher-iters", "20", "--student-iters", "8", "--vocab-size", "1000",
                           "--seq-length", "64", "--batch-size", "8", "--compress-vocab", "0.5"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # Every phase prints the project's lines only: none of DeepSpeed's (logging.verbose is off).
    assert [line for line in DEEPSPEED_LINES if line in out + proc.stderr] == [], out[-3000:] + proc.stderr[-3000:]
    rows = {}
    for name, pattern in (("teacher", r"^\s+teacher\s+([\d.]+)\s+-$"),
                          ("glmd", r"^\s+student, GLMD \(L_sp, tau=15\)\s+([\d.]+)\s+([\d.]+)$"),
                          ("glmd_tau1", r"^\s+student, GLMD \(L_sp, tau=1\)\s+([\d.]+)\s+([\d.]+)$"),
                          ("scratch", r"^\s+student, from scratch \(hard labels\)\s+([\d.]+)\s+([\d.]+)$")):
        match = re.search(pattern, out, re.MULTILINE)
        assert match, f"no {name} row in:\n{out[-2000:]}"
        rows[name] = [float(x) for x in match.groups()]
    # The teacher learned something in 20 steps: below the uniform distribution's loss.
    assert rows["teacher"][0] < math.log(1000)
    assert all(math.isfinite(x) and x > 0 for values in rows.values() for x in values)
    # Each phase left a resolved configuration and a complete checkpoint.
    for name, mode in (("teacher", "pretrain"), ("student_glmd", "distill"), ("student_glmd_tau1", "distill"),
                       ("student_scratch", "pretrain")):
        config = yaml.safe_load((workdir / name / "config.yaml").read_text())
        assert config["mode"] == mode
        assert (workdir / name / "latest").read_text() in os.listdir(workdir / name)
    assert yaml.safe_load((workdir / "student_glmd" / "config.yaml").read_text())["loss"]["temperature"] == 15.0
    assert yaml.safe_load((workdir / "student_glmd_tau1" / "config.yaml").read_text())["loss"]["temperature"] == 1.0

    # The compressed vocabulary: K = ceil(1000 * 0.5 / 128) * 128 = 512 kept ids.
    assert "vocabulary compression, r_v = 0.5: K = 512 of 1000 ids" in out
    compared = {}
    for name, label in (("full", r"student, full vocabulary \(tau=15\)"), ("compressed", r"student, r_v = 0.5 \(tau=15\)")):
        match = re.search(rf"^\s+{label}\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) %$", out, re.MULTILINE)
        assert match, f"no {name} row in:\n{out[-2000:]}"
        compared[name] = [float(x.replace(",", "")) for x in match.groups()]
    full, small = compared["full"], compared["compressed"]
    assert small[0] == full[0] - (1000 - 512) * 96      # parameters: 488 fewer embedding rows of width 96
    assert all(math.isfinite(x) and x > 0 for x in full[1:3] + small[1:3])
    assert full[3] == small[3] and 0 < small[3] < 100   # the same held-out targets, some outside the kept set
    config = yaml.safe_load((workdir / "student_compressed" / "config.yaml").read_text())
    assert config["model"]["vocab_size"] == 512 and config["vocab_compression"]["artifact"] == str(workdir / "vocab_r0.5")
    assert sorted(os.listdir(workdir / "student_compressed" / "vocab_compression")) == ["summary.json",
                                                                                      "tensors.safetensors"]
    assert (workdir / "data" / "frequencies.tsv").read_text().startswith("id\ttoken\tcount\trank\trole\n")

"""End-to-end smoke run of the engine through ``glmd-train``: a bf16 teacher pre-training, then a
bf16 GLMD distillation from it, on tiny models at TP = PP = DP = 1.

    python -m tests.distill.engine_smoke --workdir DIR [--iterations 30] [--json OUT.json]

On a GPU machine this is the CUDA path end to end (device placement, NCCL process group, bf16
DeepSpeed engine with fp32 gradient accumulation and reduction); kernels/benchmarks/gpu_check.sh
runs it. On the CPU, tests/distill/test_engine_smoke.py runs the same script on a short schedule.
Exits non-zero if a phase fails, a loss is not finite or training does not lower the loss.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

import yaml


def _phase(workdir: str, name: str, values: dict) -> dict:
    config = os.path.join(workdir, f"{name}.yaml")
    with open(config, "w", encoding="utf-8") as f:
        yaml.safe_dump(values, f)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "megatron_glmd.cli.train", "--config", config],
                          capture_output=True, text=True)
    losses = [float(m) for m in re.findall(r"^loss ([-+\d.eE]+|nan|inf) ", proc.stdout, re.MULTILINE)]
    held_out = re.search(r"held-out: (.*)$", proc.stdout, re.MULTILINE)
    result = {"phase": name, "status": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
              "losses": losses, "held_out": held_out.group(1) if held_out else None}
    ok = proc.returncode == 0 and len(losses) >= 2 and all(math.isfinite(x) for x in losses) \
        and losses[-1] < losses[0]
    result["ok"] = ok
    if not ok:
        result["log_tail"] = (proc.stdout[-2000:] + proc.stderr[-4000:])
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    from megatron_glmd.cli.quickstart import prepare_data
    from megatron_glmd.data.tokenizer import GLMTokenizer

    workdir = os.path.abspath(args.workdir)
    prepare_data(workdir, 1000, log=lambda *a: None)
    data = os.path.join(workdir, "data")
    vocab = GLMTokenizer(os.path.join(data, "tokenizer.model")).vocab_size

    def run(mode, preset, name, teacher=None):
        return {"mode": mode, "model": {"preset": preset, "vocab_size": vocab}, "teacher_checkpoint": teacher,
                "train": {"iterations": args.iterations, "micro_batch_size": 4, "global_batch_size": 8,
                          "precision": args.precision},
                "optimizer": {"lr": 2e-3, "warmup_iters": 2},
                "data": {"train_prefix": os.path.join(data, "train"), "valid_prefix": os.path.join(data, "valid"),
                         "tokenizer_model": os.path.join(data, "tokenizer.model"), "seq_length": 128},
                "checkpoint": {"save_dir": os.path.join(workdir, name)},
                "logging": {"log_interval": 1, "eval_iters": 2, "progress_bar": False}}

    results = [_phase(workdir, "teacher", run("pretrain", "tiny-teacher", "teacher"))]
    if results[0]["ok"]:
        results.append(_phase(workdir, "student", run("distill", "tiny-student", "student",
                                                      teacher=os.path.join(workdir, "teacher"))))
    for r in results:
        print(f"{r['phase']}: status {r['status']}, {len(r['losses'])} iterations in {r['seconds']} s, loss "
              f"{r['losses'][0] if r['losses'] else 'n/a'} -> {r['losses'][-1] if r['losses'] else 'n/a'}; "
              f"held-out {r['held_out']}; {'ok' if r['ok'] else 'FAILED'}")
        if not r["ok"]:
            print(r.get("log_tail", ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"precision": args.precision, "results": results}, f, indent=2)
    return 0 if len(results) == 2 and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

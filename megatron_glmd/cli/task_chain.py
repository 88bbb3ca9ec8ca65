"""Helpers of launch/task_distill.sh (one task's stage 2: teacher fine-tune -> 2a -> 2b -> evaluate).

    python -m megatron_glmd.cli.task_chain done RUN_DIR        # exit 0 when the run is complete
    python -m megatron_glmd.cli.task_chain epochs TASK         # GLMD's epochs of a SuperGLUE task ('' if none)
    python -m megatron_glmd.cli.task_chain report TEACHER.json STUDENT.json

A run is complete when its ``latest`` checkpoint is its last iteration (``train.iterations`` of its
saved config.yaml, which holds the iterations resolved from ``train.epochs``). Standard library and
PyYAML only: nothing here loads torch.
"""
from __future__ import annotations

import json
import os
import sys

# Epochs per task of the paper's stage 2 (megatron_glmd/tasks/superglue.py, EPOCHS; torch-free copy).
EPOCHS = {"copa": 50, "rte": 50, "cb": 50, "wsc": 50, "boolq": 20, "wic": 30, "multirc": 15, "record": 5}


def run_complete(run_dir: str) -> bool:
    from ..config.base import read_yaml_mapping

    latest, config = os.path.join(run_dir, "latest"), os.path.join(run_dir, "config.yaml")
    if not (os.path.isfile(latest) and os.path.isfile(config)):
        return False
    with open(latest, encoding="utf-8") as f:
        tag = f.read().strip()
    iterations = (read_yaml_mapping(config).get("train") or {}).get("iterations")
    return isinstance(iterations, int) and tag == f"iter_{iterations:07d}" and os.path.isdir(os.path.join(run_dir, tag))


def report(paths) -> str:
    """Teacher and student metrics side by side (the JSONs ``evaluate`` writes)."""
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records.append(json.load(f))
    names = list(dict.fromkeys(k for r in records for k in r["metrics"] if k != "loss"))
    head = records[0]
    lines = [f"{head['task']} {head['split']} ({head['examples']} examples)",
             f"  {'model':<10}" + "".join(f"{n:>12}" for n in names) + "  run"]
    for label, r in zip(("teacher", "student"), records):
        lines.append(f"  {label:<10}" + "".join(f"{r['metrics'].get(n, float('nan')):>12.4f}" for n in names)
                     + f"  {r['model']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "done":
        return 0 if run_complete(argv[1]) else 1
    if len(argv) == 2 and argv[0] == "epochs":
        print(EPOCHS.get(argv[1].lower(), ""))
        return 0
    if len(argv) == 3 and argv[0] == "report":
        try:
            print(report(argv[1:]))
        except (OSError, ValueError, KeyError) as e:
            print(f"error: cannot read the evaluation results: {e}", file=sys.stderr)
            return 2
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

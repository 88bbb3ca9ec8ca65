"""Shared benchmark plumbing: synthetic data in a scratch directory, medians, atomic JSON."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def median(values):
    return statistics.median(values)


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def save(name: str, result: dict, path: str = "") -> str:
    """Print ``result`` as JSON and write it atomically to ``path`` or ``results/NAME.json``."""
    result = dict(result, machine=machine())
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    path = path or os.path.join(RESULTS, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)
    return path

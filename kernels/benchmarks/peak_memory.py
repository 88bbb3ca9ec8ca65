"""Peak extra memory of one call, as the benchmarks report it (bench_softmax_kl here and
tools/benchmarks/bench_slice_embeddings.py): one method, so their figures compare.

CUDA: ``max_memory_allocated()`` during the call minus ``memory_allocated()`` before it.
CPU: the torch allocator keeps no statistics there and tracemalloc does not see it, so the OS's
peak-RSS mark is used: freed memory handed back (``malloc_trim``), VmRSS read, the VmHWM mark
reset to it (``/proc/self/clear_refs``), the call, then VmHWM - VmRSS before. Earlier calls leave
their high-water mark behind, so the CPU probe runs in a fresh process (:func:`probe_in_child`)
after one warm-up call.
"""
from __future__ import annotations

import ctypes
import gc
import subprocess

import torch


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_peak_extra_bytes(call) -> int:
    """Peak RSS growth (bytes) while ``call()`` runs (Linux; module docstring)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    call()
    return (_rss_kib("VmHWM") - before) * 1024


def cuda_peak_extra_bytes(call) -> int:
    """Peak growth of the CUDA caching allocator's allocated bytes while ``call()`` runs."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def probe_in_child(cmd, **run_kwargs) -> int:
    """Run a probe process ``cmd`` that prints its byte count last; RuntimeError with its last
    stderr line if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **run_kwargs)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "probe failed")
    return int(proc.stdout.strip().splitlines()[-1])

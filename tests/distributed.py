"""Run a test function on several CPU processes joined by a gloo process group.

`run_distributed(world_size, fn, *args)` spawns `world_size` processes, initialises
`torch.distributed` with gloo on a free local port, calls `fn(rank, world_size, *args)` in each,
and returns the list of per-rank return values (which must be picklable). An exception on any
rank fails the calling test with that rank's traceback.

Every call runs under :func:`tests.nccl_rules.enforce_nccl_rules`: a collective or point-to-point
call with a tensor NCCL would refuse (an int16 view, a bool flag) fails the test on gloo already.

The ranks start from a fork server that has imported torch and the project once per session
(``PRELOAD``), not from a fresh interpreter each: a spawned rank spent seconds of CPU on those
imports, over a hundred times a suite. A rank is still a new process that has run nothing (the
server only imports), with the caller's environment, working directory and ``sys.path`` as spawn
gives them; its stdout and stderr are relayed to the caller's after the ranks end. DeepSpeed is
not preloaded: each rank imports it itself, as a run does, so that what its import prints (the
accelerator warning that tests/cli/test_quiet_runs.py looks for) still happens in the rank. No
preloaded module reads the environment when imported (Triton reads TRITON_INTERPRET when a kernel
is decorated, and kernels/softmax_kl_triton.py is imported only when that backend is chosen).
"""
from __future__ import annotations

import datetime
import multiprocessing
import os
import sys
import socket
import tempfile
import traceback
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.nccl_rules import enforce_nccl_rules

# Imported once by the fork server; a rank imports the rest (its test module, DeepSpeed) itself.
PRELOAD = ["torch", "torch.distributed", "megatron_glmd.engine.trainer", "megatron_glmd.engine.task_trainer",
           "tests.distributed"]
START_METHOD = "forkserver"
multiprocessing.set_forkserver_preload(PRELOAD)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, result_dir, environ, fn, args):
    # The fork server's environment is the one it started with: take the caller's, as spawn would.
    os.environ.clear()
    os.environ.update(environ)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    # The server's stdout/stderr are those of whichever test started it: write to a file the caller relays.
    log = os.open(os.path.join(result_dir, f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    torch.set_num_threads(1)
    out_path = os.path.join(result_dir, f"rank{rank}.pt")
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=300))
        with enforce_nccl_rules():
            result = fn(rank, world_size, *args)
        torch.save({"ok": True, "result": result}, out_path)
    except BaseException:  # report every failure, including assertion errors, to the parent
        torch.save({"ok": False, "error": traceback.format_exc()}, out_path)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()


def _relay(result_dir, world_size):
    """Each rank's output, onto the caller's stdout (pytest shows it with a failing test's report)."""
    for rank in range(world_size):
        path = os.path.join(result_dir, f"rank{rank}.log")
        if os.path.exists(path) and os.path.getsize(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                sys.stdout.write(f"--- rank {rank} ---\n{f.read()}")


def run_distributed(world_size: int, fn, *args):
    """Run `fn(rank, world_size, *args)` on `world_size` gloo ranks; return the per-rank results."""
    with tempfile.TemporaryDirectory() as result_dir:
        port = _free_port()
        exited = None
        try:
            mp.start_processes(_worker, args=(world_size, port, result_dir, dict(os.environ), fn, args),
                               nprocs=world_size, join=True, start_method=START_METHOD)
        except mp.ProcessRaisedException:
            pass  # the per-rank report below carries the traceback
        except mp.ProcessExitedException as e:  # killed by a signal, before or after its report
            exited = str(e)
        _relay(result_dir, world_size)
        results = []
        errors = []
        for rank in range(world_size):
            path = os.path.join(result_dir, f"rank{rank}.pt")
            if not os.path.exists(path):
                errors.append(f"rank {rank}: exited without a result" + (f" ({exited})" if exited else ""))
                continue
            report = torch.load(path, weights_only=False)
            if report["ok"]:
                results.append(report["result"])
            else:
                errors.append(f"rank {rank}:\n{report['error']}")
        if errors:
            raise AssertionError("distributed test failed\n" + "\n".join(errors))
        if exited:
            # Every rank finished its work and reported; a process died in teardown (gloo's threads
            # at exit have been seen to abort, rarely, under load). The results stand.
            warnings.warn(f"a rank died after reporting its result: {exited}")
        return results

"""Run a test function on several CPU processes joined by a gloo process group.

`run_distributed(world_size, fn, *args)` starts `world_size` processes, initialises
`torch.distributed` with gloo on a free local port, calls `fn(rank, world_size, *args)` in each,
and returns the list of per-rank return values (which must be picklable). An exception on any
rank fails the calling test with that rank's traceback.

Every call runs under :func:`tests.nccl_rules.enforce_nccl_rules`: a collective or point-to-point
call with a tensor NCCL would refuse (an int16 view, a bool flag) fails the test on gloo already.

The ranks are forked from tests/fork_server.py's server (torch and the project imported once per
session), with the caller's environment; each rank's stdout and stderr are relayed to the caller's
after the ranks end.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
import tempfile
import traceback
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.fork_server import START_METHOD, become_callers
from tests.nccl_rules import enforce_nccl_rules


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, result_dir, environ, fn, args):
    log = os.path.join(result_dir, f"rank{rank}.log")       # relayed by the caller
    become_callers(environ, log, log)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
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

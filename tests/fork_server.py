"""Processes of the tests, forked from one server per session that has imported torch and the project.

A new interpreter pays seconds of CPU for ``import torch`` and the project before it does anything;
the suite started hundreds (every gloo rank of tests/distributed.py, every bad-input case of a
command). multiprocessing's fork server imports ``PRELOAD`` once, and every process the tests ask
for is forked from it: a new process that has run nothing (the server only imports), with the
caller's environment (passed on here: the server keeps the one it started with), working directory
and ``sys.path`` (multiprocessing passes those). DeepSpeed is not preloaded: a process imports it
itself, as a run does, so what its import prints (the accelerator warning, kept out of quiet runs
by engine/quiet.py) still shows where tests look for it. No preloaded module reads the environment
when imported (Triton reads TRITON_INTERPRET when a kernel is decorated, and
kernels/softmax_kl_triton.py is imported only when that backend is chosen).

:func:`run_forked` runs one function as a process of its own and returns its exit status, stdout and
stderr as ``subprocess.run`` would for a script: multiprocessing ends a process the way the
interpreter does (``sys.exit``'s status, an uncaught exception's traceback on stderr and status 1).
What it cannot show is what the preloaded imports print: a test about that runs the real command.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
import tempfile
from dataclasses import dataclass

PRELOAD = ["torch", "torch.distributed", "megatron_glmd.engine.trainer", "megatron_glmd.engine.task_trainer",
           "tests.distributed", "tests.fork_server"]
START_METHOD = "forkserver"
multiprocessing.set_forkserver_preload(PRELOAD)


def become_callers(environ, out_path, err_path) -> None:
    """In a forked process: the caller's environment, and stdout / stderr (file descriptors 1 and 2, so C
    code and handlers made earlier are caught too) onto the given files (the same file for both is fine)."""
    os.environ.clear()
    os.environ.update(environ)
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def _process(environ, out_path, err_path, target, args):
    become_callers(environ, out_path, err_path)
    sys.exit(target(*args))


def run_forked(target, *args, timeout: float = 600) -> Finished:
    """``sys.exit(target(*args))`` in a process of its own, forked from the server (``target`` and ``args``
    picklable: a module-level function)."""
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        process = multiprocessing.get_context(START_METHOD).Process(
            target=_process, args=(dict(os.environ), out, err, target, args))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise AssertionError(f"{target.__name__}{args} still running after {timeout} s")
        with open(out, encoding="utf-8", errors="replace") as o, open(err, encoding="utf-8", errors="replace") as e:
            return Finished(process.exitcode, o.read(), e.read())


def _script(path, argv):
    sys.argv = [path, *argv]
    runpy.run_path(path, run_name="__main__")


def run_script(path, *args, timeout: float = 600) -> Finished:
    """``python path args`` as a forked process: the script runs as ``__main__`` with that ``sys.argv``."""
    return run_forked(_script, str(path), [str(a) for a in args], timeout=timeout)

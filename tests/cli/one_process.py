"""glmd-train's ``main`` on several command lines in one fresh process, each with its own stdout and stderr.

A bad-input case is about what the command prints and returns, and a new interpreter for each paid
seconds of imports (torch, DeepSpeed) per case. Here one new process runs the cases one after
another; file descriptors 1 and 2 are redirected to each case's files, so whatever reaches them
(Python's streams, a logging handler made earlier, C code) lands in that case's output, as it would
in a process of its own. The project is imported inside the first case, so that what an import
prints shows in that case's output; what the process prints outside every case (at exit) is its
own stderr, which :func:`in_few_processes` checks as well. The status is what ``sys.exit(main())``
would exit with (argparse's SystemExit included; an exception's traceback goes to the case's stderr
and its status is 1). A case that leaves a process group initialised (it got as far as starting
DeepSpeed) is the last of its process, so that every case starts where a process of its own would:
nothing started, only modules imported; the rest run in a new process.

    python -m tests.cli.one_process CASES.json   # a list of {"argv": [...], "out": path, "err": path}

prints one JSON list of {"status": int, "process_group": bool}, for the cases it ran, on the
original stdout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def in_few_processes(argvs, folder):
    """glmd-train on each argument list, in as few new processes as the cases allow (see above), with
    their outputs under ``folder``: [(status, stderr, whether a process group was left initialised)]."""
    cases = [{"argv": [str(a) for a in argv], "out": str(folder / f"case{i}.out"), "err": str(folder / f"case{i}.err")}
             for i, argv in enumerate(argvs)]
    results = []
    while len(results) < len(cases):
        (folder / "cases.json").write_text(json.dumps(cases[len(results):]), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "tests.cli.one_process", str(folder / "cases.json")], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
        results += json.loads(done.stdout.strip().splitlines()[-1])
    return [(r["status"], open(c["err"], encoding="utf-8").read(), r["process_group"])
            for r, c in zip(results, cases)]


def _main(argv):
    from megatron_glmd.cli.train import main

    return main(argv)


def _process_group() -> bool:
    import torch.distributed as dist

    return dist.is_initialized()


def _run_one(argv, out_path, err_path):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            try:
                return _main(argv)
            except SystemExit as e:     # as the interpreter exits on it
                if e.code is None or isinstance(e.code, int):
                    return e.code or 0
                print(e.code, file=sys.stderr)
                return 1
            except BaseException:   # as an uncaught exception in a process of its own: traceback, status 1
                traceback.print_exc()
                return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_cases(cases):
    results = []
    for case in cases:
        status = _run_one(case["argv"], case["out"], case["err"])
        results.append({"status": status, "process_group": _process_group()})
        if results[-1]["process_group"]:
            break
    return results


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    print(json.dumps(run_cases(cases)))

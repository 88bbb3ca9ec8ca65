"""tests/fork_server.py: a forked process ends as the interpreter would end a script, with the
caller's environment, and its output is its own (file descriptors, not only Python's streams)."""
import os
import sys

from tests.fork_server import run_forked, run_script


def _speaks_and_exits(status):
    print("to stdout")
    os.write(2, b"to fd 2\n")
    print(os.environ.get("GLMD_FORK_PROBE"), file=sys.stderr)
    return status


def _raises():
    raise ValueError("deliberate")


def test_status_output_and_the_callers_environment(monkeypatch):
    run_forked(_speaks_and_exits, 0)                     # the server runs by now
    monkeypatch.setenv("GLMD_FORK_PROBE", "set after the server started")
    done = run_forked(_speaks_and_exits, 3)
    assert (done.returncode, done.stdout, done.stderr) == (3, "to stdout\n", "to fd 2\nset after the server started\n")


def test_an_uncaught_exception_is_a_traceback_and_status_1():
    done = run_forked(_raises)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ValueError: deliberate" in done.stderr


def test_a_script_runs_as_main_with_its_arguments(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nif __name__ == '__main__':\n    print(sys.argv[1:])\n    sys.exit(len(sys.argv))\n")
    done = run_script(script, "a", 2)
    assert (done.returncode, done.stdout, done.stderr) == (3, "['a', '2']\n", "")

"""Run the launch scripts as a user would, with a controlled environment, and read their output."""
import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLURM_SCRIPT = os.path.join(REPO, "launch", "distill_10b_2b.sh")
LOCAL_SCRIPT = os.path.join(REPO, "launch", "distill_local.sh")
GiB = 1024 ** 3

# The allocation `sbatch launch/distill_10b_2b.sh` gets: what Slurm would export to the batch shell.
FAKE_SLURM = {
    "SLURM_JOB_ID": "424242",
    "SLURM_NNODES": "5",
    "SLURM_NTASKS": "40",
    "SLURM_NTASKS_PER_NODE": "8",
    "SLURM_JOB_NODELIST": "gpu[01-05]",
    "SLURM_CPUS_PER_TASK": "8",
    "SLURM_SUBMIT_DIR": REPO,
}


def clean_env(**extra):
    """The test process's environment without any Slurm, GLMD or NCCL variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "GLMD_", "NCCL_", "TORCH_NCCL_"))}
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def run(script, *args, env=None, timeout=120):
    return subprocess.run(["bash", script, *args], env=env if env is not None else clean_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def launch_command(stdout):
    """The argument vector printed on the 'launch command (in ...):' line."""
    m = re.search(r"^launch command \(in [^)]*\): (.*)$", stdout, re.M)
    assert m, stdout
    return shlex.split(m.group(1))


def memory_rows(stdout):
    """{stage: (student params, teacher params, s.w+g, bucket, optim, t.w, s.act, t.act, DP tr., total)} from
    the table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["stage", "student", "params"])
    rows = {}
    for line in lines[start + 1:]:
        cols = line.split()
        if not cols or not cols[0].isdigit():
            break
        rows[int(cols[0])] = (int(cols[1].replace(",", "")), int(cols[2].replace(",", "")),
                              *(float(c) for c in cols[3:11]))
    return rows


def layer_rows(stdout):
    """{stage: (student (first, last), teacher (first, last))} from the layer table."""
    rows = {}
    for m in re.finditer(r"^\s*(\d+)\s+\d+-\d+\s+\S+\s+(\d+)-(\d+) \(\d+\)\s+(\d+)-(\d+) \(\d+\)\s*$", stdout, re.M):
        k, s0, s1, t0, t1 = map(int, m.groups())
        rows[k] = ((s0, s1), (t0, t1))
    return rows


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]

"""launch/distill_10b_2b.sh under fake Slurm variables: --dry-run plan, refusals, requeue.

No Slurm here: the script falls back to the planner's node-list parser when ``scontrol`` is not
on PATH; tests that need ``scontrol`` or ``srun`` put small fakes on PATH that log their calls.
"""
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from megatron_glmd.config import preset
from megatron_glmd.model.size import stage_parameter_count

from .helpers import (FAKE_SLURM, GiB, REPO, SLURM_SCRIPT, clean_env, error_lines, launch_command, layer_rows,
                      memory_rows, run)

TP, PP, DP = 4, 5, 2
GLOBAL_BATCH, MICRO_BATCH, SEQ = 64, 1, 512


@pytest.fixture(scope="module")
def dry_run():
    result = run(SLURM_SCRIPT, "--dry-run", env=clean_env(**FAKE_SLURM))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dry_run_prints_the_layout(dry_run):
    assert "TP=4 PP=5 DP=2" in dry_run
    assert "5 x 8 GPUs = 40 ranks; hosts gpu01 gpu02 gpu03 gpu04 gpu05" in dry_run
    accumulation = GLOBAL_BATCH // (MICRO_BATCH * DP)
    assert f"global 64 = micro-batch 1 x accumulation {accumulation} x DP 2" in dry_run
    assert accumulation == 32
    assert f"bubble (p-1)/(m+p-1) = {PP - 1}/{accumulation + PP - 1}" in dry_run
    port = 10000 + int(FAKE_SLURM["SLURM_JOB_ID"]) % 20000
    assert f"master gpu01:{port}" in dry_run
    assert "dry run: nothing started" in dry_run
    # One pipeline stage per node: stage k holds ranks 8k..8k+7, all on host k.
    for k in range(PP):
        assert re.search(rf"^\s*{k}\s+{8 * k}-{8 * k + 7}\s+gpu0{k + 1}\s", dry_run, re.M), dry_run


def test_layer_ranges_cover_both_models(dry_run):
    rows = layer_rows(dry_run)
    assert sorted(rows) == list(range(PP))
    for which, layers in ((0, 36), (1, 48)):
        covered = [i for k in range(PP) for i in range(rows[k][which][0], rows[k][which][1] + 1)]
        assert covered == list(range(layers))
        sizes = [rows[k][which][1] - rows[k][which][0] + 1 for k in range(PP)]
        assert max(sizes) - min(sizes) <= 1


def _expected_stage_gib(k):
    """Independent per-GPU bytes of stage k (the formulas of megatron_glmd.model.size and of the
    activation model documented in megatron_glmd/model/activation_memory.py), in GiB."""
    student, teacher = preset("glm-2b"), preset("glm-10b")
    n, n_t = stage_parameter_count(student, TP, PP, k), stage_parameter_count(teacher, TP, PP, k)
    weights_grads = (2 + 4) * n                   # bf16 weights, gradients accumulated in fp32
    optimizer = -(-12 * n // DP)                  # fp32 master + Adam m, v, ZeRO-1 over DP
    teacher_weights = 2 * n_t
    s, b, h, a, h_t, a_t = SEQ, MICRO_BATCH, 2048, 32, 4096, 64
    vocab_shard = -(-50257 // (128 * TP)) * 128   # GPT-2 vocab padded to 128 * TP, one TP shard
    layers = 36 // PP + (1 if k < 36 % PP else 0)
    in_flight = min(PP - k, GLOBAL_BATCH // (MICRO_BATCH * DP))
    last = k == PP - 1
    layer_full = s * b * h * (10 + 24 / TP + 5 * a * s / (h * TP))
    held = in_flight * (layers * 2 * s * b * h + s * s * b + 2 * s * b * h + 2 * 2 * s * b * h_t)
    student_act = held + layer_full + 2 * 2 * s * b * h + (2 * 2 * s * b * vocab_shard if last else 0)
    teacher_act = s * b * (2 * h_t + 2 * h_t + 6 * h_t / TP + 4 * a_t * s / TP + 2 * h_t / TP + 16 * h_t / TP)
    teacher_act += 2 * s * b * vocab_shard if last else 0
    parts = (weights_grads, optimizer, teacher_weights, student_act, teacher_act)
    return (n, n_t), [x / GiB for x in parts], sum(parts) / GiB


def test_memory_per_gpu_matches_independent_computation_and_fits(dry_run):
    rows = memory_rows(dry_run)
    assert sorted(rows) == list(range(PP))
    totals = []
    for k in range(PP):
        params, parts, total = _expected_stage_gib(k)
        assert rows[k][:2] == params
        for printed, expected in zip(rows[k][2:7], parts):
            assert printed == pytest.approx(expected, abs=0.006)
        assert rows[k][7] == pytest.approx(total, abs=0.006)
        totals.append(total)
    m = re.search(r"^peak per GPU: ([\d.]+) GiB \(stage (\d+)\) \+ ([\d.]+) GiB reserve .* = ([\d.]+) GiB "
                  r"of 40 GiB: fits A100-40GB$", dry_run, re.M)
    assert m, dry_run
    peak, stage, reserve, needed = float(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert stage == max(range(PP), key=lambda k: totals[k])
    assert peak == pytest.approx(max(totals), abs=0.006)
    assert needed == pytest.approx(peak + reserve, abs=0.011) and needed < 40


def test_modelled_cost(dry_run):
    from megatron_glmd.model.flops import training_flops_per_token

    tokens = 150_000 * GLOBAL_BATCH * SEQ
    flops = tokens * training_flops_per_token(preset("glm-2b"), preset("glm-10b"), SEQ, recompute=True)
    m = re.search(r"^cost: +([\d.e+]+) tokens x ([\d.]+) GFLOP/token = ([\d.e+]+) FLOP; at 45% of 312 TFLOP/s "
                  r"x 40 GPUs: ([\d.]+) h", dry_run, re.M)
    assert m, dry_run
    assert float(m[1]) == pytest.approx(tokens, rel=1e-3)
    assert float(m[3]) == pytest.approx(flops, rel=1e-3)
    hours = flops / (40 * 312e12 * 0.45) / 3600
    assert float(m[4]) == pytest.approx(hours, abs=0.05)
    assert 30 < float(m[2]) < 40 and hours < 12  # docs/design.md, "Launching at scale": ~36 GFLOP/token, under 12 hours


def test_srun_command(dry_run):
    argv = launch_command(dry_run)
    assert argv[0] == "srun"
    for flag in ("--nodes=5", "--ntasks=40", "--ntasks-per-node=8", "--kill-on-bad-exit=1", "--cpus-per-task=8"):
        assert flag in argv
    i = argv.index("launch/slurm_task.sh")
    assert argv[i - 1] == "bash"
    assert argv[i + 2:] == ["-m", "megatron_glmd.cli.train", "--config", "launch/configs/distill_10b_2b.yaml"]


def test_environment_and_set_overrides_reach_planner_and_trainer():
    env = clean_env(**FAKE_SLURM, GLMD_TEACHER_CKPT="/ckpt/glm-10b tp4", GLMD_SAVE_DIR="/runs/x",
                    NCCL_SOCKET_IFNAME="ib0")
    result = run(SLURM_SCRIPT, "--dry-run", "--set", "train.iterations=10", "--set=checkpoint.save_dir=/runs/y",
                 env=env)
    assert result.returncode == 0, result.stderr
    argv = launch_command(result.stdout)
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets == ["teacher_checkpoint=/ckpt/glm-10b tp4", "checkpoint.save_dir=/runs/x",
                    "logging.tensorboard_dir=/runs/x/tensorboard", "train.iterations=10", "checkpoint.save_dir=/runs/y"]
    assert f"{10 * GLOBAL_BATCH * SEQ:.3e} tokens" in result.stdout      # the planner saw the override
    assert "NCCL_SOCKET_IFNAME=ib0" in result.stdout                      # NCCL settings stay overridable


@pytest.mark.parametrize("slurm, args, message", [
    ({"SLURM_NNODES": "3", "SLURM_NTASKS": "24", "SLURM_JOB_NODELIST": "gpu[01-03]"}, (),
     "error: world size 24 (3 nodes x 8 GPUs) is not divisible by parallel.tp x parallel.pp = 4 x 5 = 20"),
    ({}, ("--set", "train.global_batch_size=63"),
     "error: train.global_batch_size 63 is not divisible by train.micro_batch_size * data-parallel size = 1 * 2"),
    ({}, ("--set", "parallel.tp=16", "--set", "parallel.pp=1"),
     "error: parallel.tp=16 exceeds the 8 GPUs of a node"),
    # Checkpointing off and 64 sequences of 1024 per micro-batch: ~39 GiB of stage-0 activations.
    ({}, ("--set", "train.checkpoint_activations=false", "--set", "data.seq_length=1024",
          "--set", "train.global_batch_size=128", "--set", "train.micro_batch_size=64"),
     "error: memory over budget: stage 0 needs"),
    ({"SLURM_JOB_NODELIST": "gpu[01-04]"}, (), "error: node list 'gpu[01-04]' names 4 hosts, but SLURM_NNODES=5"),
    ({"SLURM_NTASKS": "36"}, (), "error: SLURM_NTASKS=36 is not a multiple of SLURM_NNODES=5"),
])
def test_bad_layouts_are_refused_with_one_clear_line(slurm, args, message):
    result = run(SLURM_SCRIPT, "--dry-run", *args, env=clean_env(**{**FAKE_SLURM, **slurm}))
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert "launch command" not in result.stdout


def test_outside_slurm_dry_run_assumes_the_requested_allocation_and_real_run_refuses():
    result = run(SLURM_SCRIPT, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "TP=4 PP=5 DP=2" in result.stdout and "5 x 8 GPUs = 40 ranks" in result.stdout
    result = run(SLURM_SCRIPT)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "error: not inside a Slurm job: submit with 'sbatch launch/distill_10b_2b.sh' (or use --dry-run)"]


def _fake_tools(tmp_path, srun_body):
    """Fake scontrol and srun on a PATH directory; both log their arguments to tmp_path/calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    tools = {
        "scontrol": f'echo "scontrol $*" >> {log}\n'
                    'if [ "$1 $2" = "show hostnames" ]; then printf "%s\\n" alpha beta gamma delta epsilon; fi\n',
        "srun": f'echo "srun $*" >> {log}\n'
                f'echo "env MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT '
                f'CUDA_DEVICE_MAX_CONNECTIONS=$CUDA_DEVICE_MAX_CONNECTIONS '
                f'TORCH_NCCL_ASYNC_ERROR_HANDLING=$TORCH_NCCL_ASYNC_ERROR_HANDLING" >> {log}\n' + srun_body,
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = clean_env(**{**FAKE_SLURM, "SLURM_JOB_NODELIST": "opaque-list"})
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env, log


def test_scontrol_expands_the_node_list_when_present(tmp_path):
    env, log = _fake_tools(tmp_path, "exit 0\n")
    result = run(SLURM_SCRIPT, "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "hosts alpha beta gamma delta epsilon" in result.stdout
    assert "master alpha:" in result.stdout
    assert log.read_text().splitlines() == ["scontrol show hostnames opaque-list"]   # nothing launched


@pytest.mark.parametrize("status", [0, 3])
def test_run_launches_srun_and_passes_its_status_without_requeue(tmp_path, status):
    env, log = _fake_tools(tmp_path, f"exit {status}\n")
    result = run(SLURM_SCRIPT, env=env)
    assert result.returncode == status, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "scontrol show hostnames opaque-list"
    assert calls[1].startswith("srun --nodes=5 --ntasks=40 --ntasks-per-node=8 ")
    port = 10000 + int(FAKE_SLURM["SLURM_JOB_ID"]) % 20000
    assert calls[2] == f"env MASTER_ADDR=alpha MASTER_PORT={port} CUDA_DEVICE_MAX_CONNECTIONS=1 " \
                       "TORCH_NCCL_ASYNC_ERROR_HANDLING=1"
    assert not any("requeue" in c for c in calls)


def test_usr1_is_forwarded_to_the_step_then_the_job_is_requeued(tmp_path):
    pid_file = tmp_path / "srun.pid"
    saved = tmp_path / "saved"
    # The fake step behaves like the ranks: on USR1 it "saves" and exits.
    env, log = _fake_tools(tmp_path, f"trap 'echo saved > {saved}; exit 0' USR1\necho $$ > {pid_file}\n"
                                     "for i in $(seq 600); do sleep 0.1; done\n")
    proc = subprocess.Popen(["bash", SLURM_SCRIPT], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.time() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert pid_file.exists(), "fake srun never started"
        os.kill(proc.pid, signal.SIGUSR1)          # what Slurm sends 180 s before the time limit
        proc.wait(timeout=30)                      # the script exits; the step is Slurm's to end
    finally:
        if proc.poll() is None:
            proc.kill()
        if pid_file.exists() and pid_file.read_text().strip():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)   # the fake step's sleep (holds our pipes)
            except ProcessLookupError:
                pass
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert saved.read_text().strip() == "saved"     # the step got USR1 and finished before the requeue
    assert f"scontrol requeue {FAKE_SLURM['SLURM_JOB_ID']}" in log.read_text().splitlines()
    assert "asking the ranks to save and stop" in out and "requeueing job 424242" in out


def test_slurm_task_wrapper_maps_slurm_ids_to_torch_distributed_variables():
    env = clean_env(SLURM_PROCID="13", SLURM_LOCALID="5", SLURM_NTASKS="40")
    result = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm_task.sh"), "sh", "-c",
                             'echo "$RANK $LOCAL_RANK $WORLD_SIZE"'], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "13 5 40"

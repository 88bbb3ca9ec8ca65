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

from megatron_glmd.config import load_run_config, preset
from megatron_glmd.model.partition import run_partition

from .helpers import (FAKE_SLURM, GiB, REPO, SLURM_SCRIPT, clean_env, error_lines, launch_command, layer_rows,
                      memory_rows, run)

TP, PP, DP = 2, 5, 4
L2B, L10B = 104_857_600, 411_041_792     # forward FLOPs per token of one layer (tests/model/test_flops.py)
VOCAB_TP2 = 50432                        # 50265 padded to a multiple of 128 x TP
GLOBAL_BATCH, MICRO_BATCH, SEQ = 64, 1, 512


@pytest.fixture(scope="module")
def dry_run():
    result = run(SLURM_SCRIPT, "--dry-run", env=clean_env(**FAKE_SLURM))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def dry_run_on():
    """The plan with per-layer checkpointing on (the config says auto, which the planner resolves to off
    at this layout: test_auto_checkpointing_resolves_off_with_its_own_partition)."""
    result = run(SLURM_SCRIPT, "--dry-run", "--set", "train.checkpoint_activations=true", env=clean_env(**FAKE_SLURM))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dry_run_prints_the_layout(dry_run):
    assert "TP=2 PP=5 DP=4" in dry_run
    assert "5 x 8 GPUs = 40 ranks; hosts gpu01 gpu02 gpu03 gpu04 gpu05" in dry_run
    accumulation = GLOBAL_BATCH // (MICRO_BATCH * DP)
    assert f"global 64 = micro-batch 1 x accumulation {accumulation} x DP 4" in dry_run
    assert accumulation == 16
    assert f"bubble (p-1)/(m+p-1) = {PP - 1}/{accumulation + PP - 1}" in dry_run
    port = 10000 + int(FAKE_SLURM["SLURM_JOB_ID"]) % 20000
    assert f"master gpu01:{port}" in dry_run
    assert "dry run: nothing started" in dry_run
    # One pipeline stage per node: stage k holds ranks 8k..8k+7, all on host k.
    for k in range(PP):
        assert re.search(rf"^\s*{k}\s+{8 * k}-{8 * k + 7}\s+gpu0{k + 1}\s", dry_run, re.M), dry_run


def test_layer_ranges_are_the_engines_partition_and_cover_both_models(dry_run_on):
    rows = layer_rows(dry_run_on)
    assert sorted(rows) == list(range(PP))
    for which, layers in ((0, 36), (1, 48)):
        covered = [i for k in range(PP) for i in range(rows[k][which][0], rows[k][which][1] + 1)]
        assert covered == list(range(layers))
    cfg = load_run_config(os.path.join(REPO, "launch", "configs", "distill_10b_2b.yaml"))
    engine = run_partition(cfg, preset("glm-10b"), recompute=True)
    assert [((p.student[0], p.student[1] - 1), (p.teacher[0], p.teacher[1] - 1)) for p in engine] == \
        [rows[k] for k in range(PP)]


def _layer_params(h, tp):
    """One layer on one TP rank by hand (f = 4h): QKV and MLP-in row-split with biases, attention-out
    and MLP-out column-split with replicated biases, four LayerNorm vectors."""
    f = 4 * h
    return (3 * h // tp * h + 3 * h // tp) + (h * h // tp + h) + (f // tp * h + f // tp) + (h * f // tp + h) + 4 * h


def _stage_params(h, layers, k):
    n = layers * _layer_params(h, TP)
    embedding = VOCAB_TP2 // TP * h
    if k == 0:
        n += embedding + 2 * 1025 * h                 # word table shard, two position tables of 1024 + 1 rows
    if k == PP - 1:
        n += 2 * h + embedding                        # final LayerNorm, the tied copy of the word table
    return n


def _expected_stage_gib(k, rows):
    """Independent per-GPU bytes of stage k (the formulas documented in megatron_glmd/plan/memory.py,
    megatron_glmd/plan/deepspeed_state.py and megatron_glmd/model/activation_memory.py), in GiB, for the
    printed layer ranges."""
    layers = rows[k][0][1] - rows[k][0][0] + 1
    n, n_t = _stage_params(2048, layers, k), _stage_params(4096, rows[k][1][1] - rows[k][1][0] + 1, k)
    weights_grads = (2 + 2 + 4) * n               # BF16_Optimizer: bf16 weights and grads, fp32 accumulated grads
    optimizer = -(-12 * n // DP)                  # fp32 master + Adam m, v, ZeRO-1 over DP
    teacher_weights = 2 * n_t
    s, b, h, a, h_t, a_t = SEQ, MICRO_BATCH, 2048, 32, 4096, 64
    vocab_shard = VOCAB_TP2 // TP
    in_flight = min(PP - k, GLOBAL_BATCH // (MICRO_BATCH * DP))
    last = k == PP - 1
    layer_full = s * b * h * (10 + 24 / TP + 5 * a * s / (h * TP))
    held = in_flight * (layers * 2 * s * b * h + s * s * b + 2 * s * b * h + 2 * 2 * s * b * h_t)
    student_act = held + layer_full + 2 * 2 * s * b * h + (2 * 2 * s * b * vocab_shard if last else 0)
    teacher_act = s * b * (2 * h_t + 2 * h_t + 6 * h_t / TP + 4 * a_t * s / TP + 2 * h_t / TP + 16 * h_t / TP)
    teacher_act += 2 * s * b * vocab_shard if last else 0
    transient = 4 * n          # fewer than 5e8 elements: both param groups in one fp32 flatten for the all-reduce
    parts = (weights_grads, 0, optimizer, teacher_weights, student_act, teacher_act, transient)
    total = weights_grads + optimizer + teacher_weights + max(student_act + teacher_act, transient)
    return (n, n_t), [x / GiB for x in parts], total / GiB


def test_memory_per_gpu_matches_independent_computation_and_fits(dry_run_on):
    rows, layers = memory_rows(dry_run_on), layer_rows(dry_run_on)
    assert sorted(rows) == list(range(PP))
    totals = []
    for k in range(PP):
        params, parts, total = _expected_stage_gib(k, layers)
        assert rows[k][:2] == params
        for printed, expected in zip(rows[k][2:9], parts):
            assert printed == pytest.approx(expected, abs=0.006)
        assert rows[k][9] == pytest.approx(total, abs=0.006)
        totals.append(total)
    m = re.search(r"^peak per GPU: ([\d.]+) GiB \(stage (\d+)\) \+ ([\d.]+) GiB reserve .* = ([\d.]+) GiB "
                  r"of 40 GiB: fits A100-40GB$", dry_run_on, re.M)
    assert m, dry_run_on
    peak, stage, reserve, needed = float(m[1]), int(m[2]), float(m[3]), float(m[4])
    assert stage == max(range(PP), key=lambda k: totals[k])
    assert peak == pytest.approx(max(totals), abs=0.006)
    assert needed == pytest.approx(peak + reserve, abs=0.011) and needed < 40


def test_auto_checkpointing_resolves_off_with_its_own_partition():
    """The config's ``checkpoint_activations: auto``: the planner finds the layout fits without recompute
    and plans it so, on the partition the engine builds without recompute (no recomputed forward)."""
    result = run(SLURM_SCRIPT, "--dry-run", env=clean_env(**FAKE_SLURM))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    m = re.search(r"^checkpoint: +activation checkpointing auto -> off: fits without it \(([\d.]+) GiB <= 40 GiB\)$",
                  out, re.M)
    assert m, out
    peak = re.search(r"^peak per GPU: .* = ([\d.]+) GiB of 40 GiB: fits A100-40GB$", out, re.M)
    assert float(peak[1]) == pytest.approx(float(m[1]), abs=0.006)
    layers = layer_rows(out)
    cfg = load_run_config(os.path.join(REPO, "launch", "configs", "distill_10b_2b.yaml"))
    engine = run_partition(cfg, preset("glm-10b"), recompute=False)
    assert [((p.student[0], p.student[1] - 1), (p.teacher[0], p.teacher[1] - 1)) for p in engine] == \
        [layers[k] for k in range(PP)]
    row = r"^\s+(\d)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[+-][\d.]+%" + r"\s+[\d.]+" * 5 + "(  launch-bound)?$"
    student = {int(m[0]): float(m[1]) for m in re.findall(row, out, re.M)}
    for k in range(PP):
        n_s = layers[k][0][1] - layers[k][0][0] + 1
        expected = n_s * 3 * L2B + (3 * 2 * 2048 * VOCAB_TP2 if k == PP - 1 else 0)    # forward + backward only
        assert student[k] == pytest.approx(expected / 1e9, abs=6e-4)


def test_per_stage_flops_and_spread(dry_run_on):
    layers = layer_rows(dry_run_on)
    row = r"^\s+(\d)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)%" + r"\s+[\d.]+" * 5 + "(  launch-bound)?$"
    rows = {int(m[0]): tuple(map(float, m[1:5])) for m in re.findall(row, dry_run_on, re.M)}
    assert sorted(rows) == list(range(PP)), dry_run_on
    totals = []
    for k in range(PP):
        n_s = layers[k][0][1] - layers[k][0][0] + 1
        n_t = layers[k][1][1] - layers[k][1][0] + 1
        student = n_s * 4 * L2B + (3 * 2 * 2048 * VOCAB_TP2 if k == PP - 1 else 0)   # fwd + bwd + recompute
        teacher = n_t * L10B + (2 * 4096 * VOCAB_TP2 if k == PP - 1 else 0)
        assert rows[k][:3] == pytest.approx((student / 1e9, teacher / 1e9, (student + teacher) / 1e9), abs=6e-4)
        totals.append(student + teacher)
    mean = sum(totals) / PP
    for k in range(PP):
        assert rows[k][3] == pytest.approx(100 * (totals[k] / mean - 1), abs=0.006)
    m = re.search(r"^spread: +([+-][\d.]+)% \(max/mean - 1.*min/mean - 1 = ([+-][\d.]+)%", dry_run_on, re.M)
    assert m, dry_run_on
    assert float(m[1]) == pytest.approx(100 * (max(totals) / mean - 1), abs=0.006)
    assert float(m[2]) == pytest.approx(100 * (min(totals) / mean - 1), abs=0.006)
    # Whole layers allow no less than +3.26% here (tests/model/test_partition.py); the even split had ~7%.
    assert 3.0 < float(m[1]) < 3.3


def test_modelled_time(dry_run_on):
    tokens = 150_000 * GLOBAL_BATCH * SEQ
    model = 3 * (36 * L2B + 2 * 2048 * 50304) + 48 * L10B + 2 * 4096 * 50304       # no recompute
    hardware = model + 36 * L2B + (3 * 2 * 2048 + 2 * 4096) * (VOCAB_TP2 - 50304)   # recompute, TP padding
    m = re.search(r"^flops: +([\d.e+]+) tokens; ([\d.]+) GFLOP/token model .*, ([\d.]+) GFLOP/token hardware",
                  dry_run_on, re.M)
    assert m, dry_run_on
    assert float(m[1]) == pytest.approx(tokens, rel=1e-3)
    assert float(m[2]) == pytest.approx(model / 1e9, abs=0.006) and float(m[3]) == pytest.approx(hardware / 1e9,
                                                                                                 abs=0.006)
    m = re.search(r"^step: +\(m \+ p - 1\) x slowest stage = (\d+) x ([\d.]+) ms \(stage \d\) \+ embedding tie "
                  r"([\d.]+) ms \+ DP reduce ([\d.]+) ms = ([\d.]+) s", dry_run_on, re.M)
    assert m, dry_run_on
    assert int(m[1]) == GLOBAL_BATCH // DP + PP - 1
    step = (int(m[1]) * float(m[2]) + float(m[3]) + float(m[4])) / 1e3
    assert float(m[5]) == pytest.approx(step, abs=6e-4)
    m = re.search(r"^time: +150000 steps x ([\d.]+) s = ([\d.]+) h .*; MFU ([\d.]+)%, HFU ([\d.]+)% of 312 TFLOP/s "
                  r"x 40 GPUs", dry_run_on, re.M)
    assert m, dry_run_on
    hours = 150_000 * step / 3600
    assert float(m[2]) == pytest.approx(hours, abs=0.06) and hours < 12      # DESIGN: under 12 hours
    assert float(m[3]) == pytest.approx(100 * model * GLOBAL_BATCH * SEQ / (step * 40 * 312e12), abs=0.06)
    assert float(m[4]) == pytest.approx(100 * hardware * GLOBAL_BATCH * SEQ / (step * 40 * 312e12), abs=0.06)


def test_srun_command(dry_run):
    argv = launch_command(dry_run)
    assert argv[0] == "srun"
    for flag in ("--nodes=5", "--ntasks=40", "--ntasks-per-node=8", "--distribution=block", "--kill-on-bad-exit=1",
                 "--cpus-per-task=8"):
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
     "error: world size 24 (3 nodes x 8 GPUs) is not divisible by parallel.tp x parallel.pp = 2 x 5 = 10"),
    ({}, ("--set", "train.global_batch_size=63"),
     "error: train.global_batch_size 63 is not divisible by train.micro_batch_size * data-parallel size = 1 * 4"),
    ({}, ("--set", "parallel.tp=16", "--set", "parallel.pp=1"),
     "error: parallel.tp=16 exceeds the 8 GPUs of a node"),
    # Checkpointing off and 32 sequences of 1024 per micro-batch: ~60 GiB of activations on a stage.
    ({}, ("--set", "train.checkpoint_activations=false", "--set", "data.seq_length=1024",
          "--set", "train.global_batch_size=128", "--set", "train.micro_batch_size=32"),
     "error: memory over budget: stage 2 needs"),
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
    assert "TP=2 PP=5 DP=4" in result.stdout and "5 x 8 GPUs = 40 ranks" in result.stdout
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


@pytest.mark.parametrize("status, requeued", [(0, False), (3, False), (75, True)])
def test_run_launches_srun_and_requeues_only_after_a_requested_save(tmp_path, status, requeued):
    env, log = _fake_tools(tmp_path, f"exit {status}\n")
    result = run(SLURM_SCRIPT, env=env)
    assert result.returncode == (0 if requeued else status), result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "scontrol show hostnames opaque-list"
    assert calls[1].startswith("srun --nodes=5 --ntasks=40 --ntasks-per-node=8 --distribution=block ")
    port = 10000 + int(FAKE_SLURM["SLURM_JOB_ID"]) % 20000
    assert calls[2] == f"env MASTER_ADDR=alpha MASTER_PORT={port} CUDA_DEVICE_MAX_CONNECTIONS=1 " \
                       "TORCH_NCCL_ASYNC_ERROR_HANDLING=1"
    assert (f"scontrol requeue {FAKE_SLURM['SLURM_JOB_ID']}" in calls) == requeued
    assert sum("requeue" in c for c in calls) == (1 if requeued else 0)
    if status == 3:
        assert "training step failed with status 3: not requeued" in result.stdout


@pytest.mark.parametrize("exit_on_usr1, requeued", [(75, True), (0, False), (1, False)])
def test_usr1_is_forwarded_to_the_step_and_only_a_clean_save_is_requeued(tmp_path, exit_on_usr1, requeued):
    pid_file = tmp_path / "srun.pid"
    saved = tmp_path / "saved"
    # The fake step behaves like the ranks: on USR1 it "saves" and exits with the given status
    # (glmd-train: 75 after a requested save; anything else is a finished run or a failure).
    env, log = _fake_tools(tmp_path, f"trap 'echo saved > {saved}; exit {exit_on_usr1}' USR1\necho $$ > {pid_file}\n"
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
    assert proc.returncode == (0 if requeued else exit_on_usr1), err
    assert saved.read_text().strip() == "saved"     # the step got USR1 and finished before any requeue
    assert (f"scontrol requeue {FAKE_SLURM['SLURM_JOB_ID']}" in log.read_text().splitlines()) == requeued
    assert "asking the ranks to save and stop" in out
    assert ("requeueing job 424242" in out) == requeued
    if exit_on_usr1 == 1:
        assert "training step failed with status 1: not requeued" in out


def test_submitted_from_outside_the_repository_is_one_clear_error(tmp_path):
    spool = tmp_path / "spool"           # sbatch runs a copy of the script from its spool directory
    spool.mkdir()
    copy = spool / "slurm_script"
    copy.write_text(open(SLURM_SCRIPT).read())
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    env = clean_env(**{**FAKE_SLURM, "SLURM_SUBMIT_DIR": str(elsewhere)})
    result = subprocess.run(["bash", str(copy)], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"error: cannot find the repository: no launch/distill_10b_2b.sh under SLURM_SUBMIT_DIR={elsewhere} or "
        "GLMD_ROOT; submit from the repository root or set GLMD_ROOT"]
    result = subprocess.run(["bash", str(copy), "--dry-run"], env={**env, "GLMD_ROOT": str(elsewhere)}, cwd=elsewhere,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [f"error: GLMD_ROOT={elsewhere} holds no launch/distill_10b_2b.sh: point it "
                                          "at the repository"]
    result = subprocess.run(["bash", str(copy), "--dry-run"], env={**env, "GLMD_ROOT": REPO}, cwd=elsewhere,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr            # GLMD_ROOT finds it from anywhere


def _task(**extra):
    env = clean_env()
    env.pop("CUDA_VISIBLE_DEVICES", None)      # only what the test sets
    env.update(extra)
    return subprocess.run(["bash", os.path.join(REPO, "launch", "slurm_task.sh"), "sh", "-c",
                           'echo "$RANK $LOCAL_RANK $WORLD_SIZE"'], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("visible, local_rank", [(None, "5"), ("", "5"), ("0,1,2,3,4,5,6,7", "5"), ("3", "0"),
                                                 ("GPU-8f2c", "0")])
def test_slurm_task_wrapper_maps_slurm_ids_and_the_visible_gpu(visible, local_rank):
    env = dict(SLURM_PROCID="13", SLURM_LOCALID="5", SLURM_NTASKS="40")
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    result = _task(**env)
    assert result.returncode == 0, result.stderr
    # One GPU bound to the task is its device 0; a task that sees the node's GPUs takes SLURM_LOCALID.
    assert result.stdout.strip() == f"13 {local_rank} 40"


def test_slurm_task_wrapper_refuses_a_local_id_beyond_the_visible_gpus():
    result = _task(SLURM_PROCID="13", SLURM_LOCALID="5", SLURM_NTASKS="40", CUDA_VISIBLE_DEVICES="0,1")
    assert result.returncode == 2
    assert error_lines(result.stderr) == ["error: rank 13: SLURM_LOCALID=5 but this task sees only 2 GPUs "
                                          "(CUDA_VISIBLE_DEVICES=0,1)"]

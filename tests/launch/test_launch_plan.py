"""The planner (megatron_glmd.plan) through its CLI glmd-launch-plan, and launch/distill_local.sh --dry-run."""
import math
import os
import re
import subprocess
import sys

import pytest
import yaml

from megatron_glmd.cli import launch_plan
from megatron_glmd.config import load_run_config, preset
from megatron_glmd.model.partition import run_partition
from megatron_glmd.plan import PlanError
from megatron_glmd.plan.build import build_plan
from megatron_glmd.plan.layout import check_layout, resolve_teacher

from .helpers import LOCAL_SCRIPT, REPO, clean_env, error_lines, launch_command, layer_rows, memory_rows, run

CONFIG_10B = os.path.join(REPO, "launch", "configs", "distill_10b_2b.yaml")


def test_layout_checks_accept_exactly_the_valid_layouts_of_40_gpus():
    accepted = {}
    for tp in range(1, 41):
        for pp in range(1, 41):
            if 40 % (tp * pp):
                continue
            dp = 40 // (tp * pp)
            c = load_run_config(CONFIG_10B, [f"parallel.tp={tp}", f"parallel.pp={pp}"])
            # Independent rules: TP inside a node and dividing every head count; DP divides the batch.
            valid = (8 % tp == 0 and 32 % tp == 0 and 64 % tp == 0 and pp <= 36 and 64 % dp == 0)
            try:
                assert check_layout(c, nodes=5, gpus_per_node=8) == dp
                accepted[(tp, pp)] = dp
            except PlanError:
                assert not valid, (tp, pp)
                continue
            assert valid, (tp, pp)
    # The factor 5 of 40 can only go into PP: PP in {5, 10, 20}.
    assert accepted and {pp for _, pp in accepted} == {5, 10, 20}


@pytest.mark.parametrize("pp", [1, 2, 3, 5, 7, 12])
def test_plan_holds_the_engines_partition(pp):
    cfg = load_run_config(CONFIG_10B, [f"parallel.pp={pp}", "parallel.tp=1"])
    plan = build_plan(cfg, nodes=1, gpus_per_node=pp, teacher=preset("glm-10b"))
    # auto: recompute only where the layout does not fit 40 GiB without it; the engine's partition for that
    assert plan.checkpoint_activations == (plan.checkpointing.needed_off_gib > 40)
    recompute = plan.checkpoint_activations
    assert [s.layers for s in plan.stages] == run_partition(cfg, preset("glm-10b"), recompute=recompute)
    for attr, layers in (("student", 36), ("teacher", 48)):
        ranges = [getattr(s.layers, attr) for s in plan.stages]
        assert ranges[0][0] == 0 and ranges[-1][1] == layers
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])) and all(e > s for s, e in ranges)


def test_rank_to_stage_and_node_mapping():
    cfg = load_run_config(CONFIG_10B)
    hosts = [f"h{i}" for i in range(5)]
    plan = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"), hosts=hosts)
    # DeepSpeed's grid order (pipe, data, model): stage k is ranks [k*TP*DP, (k+1)*TP*DP).
    assert [s.ranks for s in plan.stages] == [(8 * k, 8 * k + 7) for k in range(5)]
    assert [s.nodes for s in plan.stages] == [[h] for h in hosts]
    # PP=2 over 5 nodes puts 20 ranks per stage: stages straddle nodes, and the plan says so.
    plan = build_plan(load_run_config(CONFIG_10B, ["parallel.pp=2", "train.global_batch_size=40"]),
                      nodes=5, gpus_per_node=8, teacher=preset("glm-10b"), hosts=hosts)
    assert [s.nodes for s in plan.stages] == [["h0", "h1", "h2"], ["h2", "h3", "h4"]]


def test_fp32_memory_and_no_checkpointing_activations_are_larger():
    on = ["train.checkpoint_activations=true"]
    base = build_plan(load_run_config(CONFIG_10B, on), nodes=5, gpus_per_node=8, teacher=preset("glm-10b"))
    fp32 = build_plan(load_run_config(CONFIG_10B, on + ["train.precision=fp32"]), nodes=5, gpus_per_node=8,
                      teacher=preset("glm-10b"))
    full = build_plan(load_run_config(CONFIG_10B, ["train.checkpoint_activations=false"]), nodes=5,
                      gpus_per_node=8, teacher=preset("glm-10b"))
    tp, dp = base.tp, base.dp
    for b, f, a in zip(base.stages, fp32.stages, full.stages):
        n = b.memory.student_params
        # fp32: DeepSpeedZeroOptimizer stage 1 keeps fp32 weights and grads, clones an fp32 master
        # partition (12/DP with Adam's moments) and a 5e8-element fp32 gradient bucket.
        assert f.memory.student_weights_grads == 8 * n and f.memory.optimizer == math.ceil(12 * n / dp)
        assert f.memory.grad_bucket == 4 * 500_000_000
        assert b.memory.student_weights_grads == 8 * n and b.memory.optimizer == math.ceil(12 * n / dp)
        assert b.memory.grad_bucket == 0
        assert f.memory.teacher_weights == 2 * b.memory.teacher_weights
        # Without checkpointing every in-flight micro-batch keeps each layer's full activations
        # instead of its input, and no layer is recomputed: the difference is exactly that (same
        # layers: the partition without recompute is computed again for `full`, so use its ranges).
        s_, b_, h, heads = 512, 1, 2048, 32
        layer_full = s_ * b_ * h * (10 + 24 / tp + 5 * heads * s_ / (h * tp))
        in_flight = min(5 - b.pp_rank, 64 // dp)
        layers_b = b.layers.student[1] - b.layers.student[0]
        layers_a = a.layers.student[1] - a.layers.student[0]
        expected = in_flight * (layers_a * layer_full - layers_b * 2 * s_ * b_ * h) - layer_full
        assert a.memory.student_activations - b.memory.student_activations == pytest.approx(expected)


def test_teacher_shape_from_checkpoint_or_flag(tmp_path):
    ckpt = tmp_path / "teacher"
    ckpt.mkdir()
    cfg = load_run_config(CONFIG_10B, [f"teacher_checkpoint={ckpt}"])
    with pytest.raises(PlanError, match="the teacher's shape is unknown: .*config.yaml does not exist"):
        resolve_teacher(cfg, None)
    assert resolve_teacher(cfg, "glm-10b") == preset("glm-10b")
    # A saved pretrain run config beside the checkpoint is what the trainer loads: it wins, and a
    # --teacher-model that disagrees with it is an error naming the field.
    saved = yaml.safe_load(open(CONFIG_10B))
    saved.update(mode="pretrain", model={"preset": "glm-large", "vocab_size": 50257})
    (ckpt / "config.yaml").write_text(yaml.safe_dump(saved))
    assert resolve_teacher(cfg, None).num_layers == 24
    with pytest.raises(PlanError, match=r"teacher num_layers=24, but --teacher-model glm-10b has num_layers=48"):
        resolve_teacher(cfg, "glm-10b")
    assert resolve_teacher(load_run_config(CONFIG_10B, ["mode=pretrain"]), None) is None


def test_teacher_vocab_and_heads_are_checked_by_the_trainers_check():
    cfg = load_run_config(CONFIG_10B)
    vocab = cfg.model.vocab_size
    with pytest.raises(PlanError, match=f"teacher vocab_size=30522, student vocab_size={vocab}: teacher and student "
                                        "must share the vocabulary"):
        build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b", vocab_size=30522))
    with pytest.raises(PlanError, match="teacher model: tensor-parallel size 2 must divide num_attention_heads"):
        build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b", num_attention_heads=1))


def test_cli_error_is_one_line_and_exit_2(capsys):
    assert launch_plan.main(["--config", CONFIG_10B, "--nodes", "3", "--teacher-model", "glm-10b"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == ["error: world size 24 (3 nodes x 8 GPUs) is not divisible by "
                                "parallel.tp x parallel.pp = 2 x 5 = 10"]
    assert out == ""
    assert launch_plan.main(["--config", CONFIG_10B, "--nodes", "5", "--teacher-model", "glm-10b",
                             "--gpu-memory-gib", "6"]) == 2
    out, err = capsys.readouterr()
    assert "DOES NOT FIT" in out            # the table is printed, then the refusal
    assert len(error_lines(err)) == 1 and err.startswith("error: memory over budget: stage 0 needs")
    assert launch_plan.main(["--config", CONFIG_10B, "--nodes", "5", "--teacher-model", "glm-10b",
                             "--matmul-efficiency", "1.5"]) == 2
    assert capsys.readouterr().err.startswith("error: the time model needs 0 < --matmul-efficiency <= 1")


def test_cli_rank_lists_layouts_fastest_first_with_the_reason(capsys):
    assert launch_plan.main(["--config", CONFIG_10B, "--nodes", "5", "--teacher-model", "glm-10b", "--rank",
                             "--top", "6"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d+)  TP=(\d+) PP=(\d+) DP=(\d+) mb=(\d+) ckpt=(?:on|off)\s+\*?\s+([\d.]+)%\s+"
                      r"([+\d.]+)%\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s+\d+/\d+$", out, re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 7)), out
    steps = [float(r[7]) for r in rows]
    assert steps == sorted(steps)
    for r in rows:
        tp, pp, dp, mb = map(int, r[1:5])
        assert tp * pp * dp == 40
        assert float(r[5]) == pytest.approx(100 * (pp - 1) / (64 // (dp * mb) + pp - 1), abs=0.05)
        assert float(r[8]) == pytest.approx(150_000 * float(r[7]) / 3600, abs=0.2)
    # The run config's layout is the model's fastest, and the output says why it beats the runner-up.
    assert rows[0][1:5] == ("2", "5", "4", "1")
    assert re.search(r"^\s+1  TP=2 PP=5 DP=4 mb=1 ckpt=off +\* ", out, re.M)   # auto's choice for the layout
    assert re.search(r"^why: +TP=2 PP=5 DP=4 mb=1 ckpt=off beats TP=\d+ PP=\d+ DP=\d+ mb=\d+ ckpt=o(n|ff) by "
                     r"[\d.]+ ms/step", out, re.M)
    assert ("config:      the run config's TP=2 PP=5 DP=4 mb=1 ckpt=off (checkpoint_activations: auto) ranks first"
            in out)


def test_cli_launch_us_marks_launch_bound_stages(capsys):
    """--launch-us sets the host time per kernel launch: at TP=4 (half the GPU time per stage of TP=2, the
    same launches) with eager layers stage 1 (10 student layers, 8 teacher layers: 10 x (34 + 30) + 8 x 17
    = 776 launches) is launch-bound at the default 8 us and not at 5 us (3.9 ms of launches against
    ~5.9 ms on the GPU)."""
    base = ["--config", CONFIG_10B, "--nodes", "5", "--teacher-model", "glm-10b", "--set", "parallel.tp=4",
            "--set", "model.compile=off"]
    for us, bound in (("8", True), ("5", False)):
        assert launch_plan.main(base + ["--launch-us", us]) == 0
        out = capsys.readouterr().out
        row = re.search(r"^\s+1\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[+-][\d.]+%\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s+"
                        r"[\d.]+(  launch-bound)?$", out, re.M)
        assert row, out
        assert float(row[1]) == pytest.approx(776 * float(us) * 1e-3, abs=6e-4)
        assert bool(row[2]) is bound
        assert ("launches:    stage(s) 1 launch-bound" in out) is bound


def test_expand_nodelist_cli_imports_no_torch():
    code = ("import sys; from megatron_glmd.cli import launch_plan; rc = launch_plan.main(['--expand-nodelist', "
            "'gpu[1-2]']); assert rc == 0; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["gpu1", "gpu2", "[]"]


def test_local_dry_run_one_node():
    result = run(LOCAL_SCRIPT, "--dry-run", "--nproc", "8")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "TP=4 PP=1 DP=2" in out and "1 x 8 GPUs = 8 ranks" in out
    assert "global 64 = micro-batch 4 x accumulation 8 x DP 2" in out
    assert layer_rows(out) == {0: ((0, 35), (0, 47))}
    rows = memory_rows(out)
    assert list(rows) == [0] and rows[0][9] < 40
    assert ": fits A100-40GB" in out
    argv = launch_command(out)
    assert argv[:4] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8"]
    assert argv[4:] == ["-m", "megatron_glmd.cli.train", "--config", "launch/configs/distill_local.yaml"]
    assert "dry run: nothing started" in out


def test_local_dry_run_cpu_processes_with_tiny_models():
    sets = ["parallel.tp=2", "parallel.pp=1", "model.preset=tiny-student", "data.seq_length=64",
            "train.micro_batch_size=2", "train.global_batch_size=4"]
    args = ["--dry-run", "--cpu", "--nproc", "2", "--teacher-model", "tiny-teacher"]
    for s in sets:
        args += ["--set", s]
    result = run(LOCAL_SCRIPT, *args, env=clean_env(GLMD_SAVE_DIR="/tmp/glmd-x"))
    assert result.returncode == 0, result.stderr
    assert "1 x 2 CPU processes = 2 ranks" in result.stdout and "TP=2 PP=1 DP=1" in result.stdout
    assert "no memory budget checked" in result.stdout
    argv = launch_command(result.stdout)
    assert argv[3] == "--nproc_per_node=2"
    given = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert given == ["train.precision=fp32", "checkpoint.save_dir=/tmp/glmd-x",
                     "logging.tensorboard_dir=/tmp/glmd-x/tensorboard", *sets]


@pytest.mark.parametrize("args, message", [
    (("--nproc", "6"), "error: 6 GPUs per node is not a multiple of parallel.tp=4"),
    (("--nproc", "two"), "error: --nproc must be a positive integer, got 'two'"),
    (("--bogus",), "error: unknown argument '--bogus'"),
])
def test_local_dry_run_refuses(args, message):
    result = run(LOCAL_SCRIPT, "--dry-run", *args)
    assert result.returncode == 2
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr

"""Elastic resume: a ZeRO-1 checkpoint written at one data-parallel size resumes at another.

Two uninterrupted runs of the same configuration, one at DP = 1 and one at DP = 2, each save at
iteration N and train on. Same seed and global batch give the same math at any DP size, so each
is an independent reference for the steps after N: the checkpoint of one run, resumed at the other
DP size, must continue the curve of the run it came from **and** the curve of the run that was at
the new DP size at those steps, both within fp32 rounding (dropout off, as in the layout tests:
a rank draws its dropout masks per micro-batch, so masks differ across DP sizes). Right after the
resume, every parameter's fp32 master weight and Adam moments (gathered with DeepSpeed's
``safe_get_full_*``) equal, bit for bit, what the saving run held at iteration N.
"""
import builtins
import os
import shutil

import pytest
import torch
import yaml

from megatron_glmd.config import ConfigError
from megatron_glmd.checkpoint.checks import check_run_checkpoints
from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed

N, TOTAL = 3, 6


def _full_state(trainer):
    """Each parameter's fp32 master and optimizer moments, and the step counters, gathered over DP."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    engine = trainer.engine
    # DeepSpeed links the moments to the parameters after its first step of the first param group only
    # (the second group's moments do not exist yet then), and a resumed engine not before its first step.
    engine.optimizer._hp_optimizer_states_linked = False
    engine.optimizer._lazy_init_hp_params_optimizer_state()
    state = {"global_steps": engine.global_steps, "lr": engine.get_lr(),
             "adam_step": [float(s["step"]) for s in engine.optimizer.optimizer.state.values()]}
    for param, name in sorted(engine.param_names.items(), key=lambda item: item[1]):
        state[name] = {"fp32": safe_get_full_fp32_param(param).clone(),
                       **{k: safe_get_full_optimizer_state(param, k).clone() for k in ("exp_avg", "exp_avg_sq")}}
    return state


def _train(rank, world, save_dir, precision):
    """Train to TOTAL (resuming when save_dir holds a checkpoint), saving at iteration N; returns the
    start iteration, the losses of this call and the optimizer state at N (saved, or just resumed)."""
    trainer = Trainer(run_config("pretrain", 1, 1, save_dir, iterations=TOTAL, precision=precision), train_data())
    start, curve = trainer.iteration, []
    state = _full_state(trainer) if start else None
    while trainer.iteration < TOTAL:
        curve.append(trainer.train_step()["loss"])
        if trainer.iteration == N:
            trainer.save()
            state = _full_state(trainer)
    return start, curve, state


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def runs(request, tmp_path_factory):
    precision, out = request.param, {"precision": request.param}
    for dp in (1, 2):
        save_dir = str(tmp_path_factory.mktemp(f"{precision}_dp{dp}") / "run")
        out[dp] = run_distributed(dp, _train, save_dir, precision)
        out[f"from{dp}"] = str(tmp_path_factory.mktemp(f"{precision}_from_dp{dp}") / "run")
        shutil.copytree(save_dir, out[f"from{dp}"])
    for old, new in ((1, 2), (2, 1)):
        before = _digest(out[f"from{old}"])
        out[(old, new)] = run_distributed(new, _train, out[f"from{old}"], precision)
        out[f"unchanged{old}"] = _digest(out[f"from{old}"]) == before
    return out


def _digest(save_dir):
    import hashlib

    return {os.path.relpath(os.path.join(d, f), save_dir): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(save_dir) for f in files}


@pytest.mark.parametrize("old,new", [(1, 2), (2, 1)])
def test_curve_after_resume_at_another_dp_size_equals_both_references(runs, old, new):
    for rank, (start, curve, _) in enumerate(runs[(old, new)]):
        assert start == N
        for reference in (old, new):   # the run it came from; the run that was at DP = new at these steps
            torch.testing.assert_close(torch.tensor(curve), torch.tensor(runs[reference][0][1][N:]),
                                       rtol=1e-5, atol=1e-5,
                                       msg=f"{runs['precision']} DP {old} -> {new}, rank {rank}, vs DP {reference}")
    assert runs[old][0][1][-1] < runs[old][0][1][0]


@pytest.mark.parametrize("old,new", [(1, 2), (2, 1)])
def test_optimizer_state_after_resume_equals_the_saved_one(runs, old, new):
    saved = runs[old][0][2]
    for rank, (_, _, resumed) in enumerate(runs[(old, new)]):
        assert resumed.keys() == saved.keys()
        assert resumed["global_steps"] == saved["global_steps"] == N and resumed["lr"] == saved["lr"]
        assert resumed["adam_step"] == [float(N)] * len(resumed["adam_step"])
        for name in saved:
            if isinstance(saved[name], dict):
                for key, tensor in saved[name].items():
                    assert torch.equal(resumed[name][key], tensor), (rank, name, key)


def test_the_checkpoint_is_read_never_written(runs):
    """Nothing is converted on disk: every file of the resumed checkpoint is as the saving run left it."""
    assert runs["unchanged1"] and runs["unchanged2"]


class _Payload:
    """Unpickling this creates a file: what an attacker's payload could do instead."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _resume_error(rank, world, save_dir):
    try:
        Trainer(run_config("pretrain", 1, 1, save_dir, iterations=TOTAL), train_data())
    except ConfigError as e:
        return str(e)
    return None


def test_a_tampered_shard_of_another_rank_is_refused_and_never_runs(runs, tmp_path):
    """Re-partitioning reads the shards of other DP ranks too, through the same safe loader."""
    if runs["precision"] != "fp32":
        pytest.skip("one precision suffices")
    save_dir = str(tmp_path / "run")
    shutil.copytree(runs["from2"], save_dir)
    path = os.path.join(save_dir, "iter_0000003", "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    marker = str(tmp_path / "payload_ran")
    torch.save({**torch.load(path, weights_only=False), "extra": _Payload(marker)}, path)
    error = run_distributed(1, _resume_error, save_dir)[0]
    assert not os.path.exists(marker), "the payload ran"
    assert error is not None and error.startswith(f"{path}: refused to load"), error


# ---------------------------------------------------------------- refused before any work

def _fake_checkpoint(tmp_path, dp, tp=1, pp=1, precision="fp32", missing=()):
    """A save_dir as a run at DP=dp leaves it, with empty DeepSpeed files: these checks read names only."""
    save_dir = tmp_path / "run"
    tag = save_dir / "iter_0000002"
    tag.mkdir(parents=True)
    (save_dir / "latest").write_text("iter_0000002")
    saved = run_config("pretrain", tp, pp, str(save_dir), precision=precision)
    (save_dir / "config.yaml").write_text(yaml.safe_dump(saved.to_dict()))
    prefix = "bf16_" if precision == "bf16" else ""
    for d in range(dp):
        if d not in missing:
            (tag / f"{prefix}zero_pp_rank_{d}_mp_rank_00_optim_states.pt").write_bytes(b"")
    return str(save_dir)


def _refusal(monkeypatch, save_dir, world, **train):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    with pytest.raises(ConfigError) as e:
        check_run_checkpoints(run_config("pretrain", 1, 1, save_dir, **train))
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("old_dp,world", [(1, 2), (2, 1)])
def test_fp16_at_another_dp_size_is_refused(tmp_path, monkeypatch, old_dp, world):
    save_dir = _fake_checkpoint(tmp_path, old_dp, precision="fp16")
    message = _refusal(monkeypatch, save_dir, world, precision="fp16")
    assert message == (f"{save_dir}/iter_0000002: resuming a fp16 run at another data-parallel size ({old_dp} -> "
                       f"{world}) is not supported (only fp32, bf16): resume it at data-parallel size {old_dp} "
                       f"(world size {old_dp})")


def test_precision_change_with_a_dp_change_is_refused(tmp_path, monkeypatch):
    save_dir = _fake_checkpoint(tmp_path, 1)
    message = _refusal(monkeypatch, save_dir, 2, precision="bf16")
    assert message.endswith("(1 -> 2) keeps train.precision: the checkpoint is fp32, this run is bf16")


def test_a_missing_optimizer_shard_is_named(tmp_path, monkeypatch):
    save_dir = _fake_checkpoint(tmp_path, 3, missing=(1,))
    message = _refusal(monkeypatch, save_dir, 2)
    assert message == (f"{save_dir}/iter_0000002: incomplete checkpoint: ZeRO optimizer shards of DP ranks "
                       "[0, 2] found for mp_rank_00")


def test_same_dp_size_and_supported_changes_pass_the_checks(tmp_path, monkeypatch):
    save_dir = _fake_checkpoint(tmp_path, 2, precision="bf16")
    for world in (1, 2, 4):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        check_run_checkpoints(run_config("pretrain", 1, 1, save_dir, precision="bf16"))


@pytest.mark.parametrize("name,tp,pp", [("tp", 2, 1), ("pp", 1, 2)])
def test_tp_or_pp_change_names_the_resharding_tool(tmp_path, monkeypatch, name, tp, pp):
    save_dir = _fake_checkpoint(tmp_path, 1, tp=tp, pp=pp)
    message = _refusal(monkeypatch, save_dir, 2)
    out = f"{save_dir}-tp1-pp1"
    assert message == (
        f"{save_dir}/config.yaml: resume checkpoint has parallel.{name}=2, this run has parallel.{name}=1: resume "
        f"at parallel.{name}=2 (the data-parallel size may change), or re-lay out the weights with python "
        f"tools/reshard_checkpoint.py --source {save_dir} --output {out} --tp 1 --pp 1 and start a new run from "
        f"them (init_checkpoint={out}, another checkpoint.save_dir): weights only, the optimizer state, LR "
        "schedule, RNG states and data position are dropped")

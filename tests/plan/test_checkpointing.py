"""``train.checkpoint_activations: auto``: validated, decided per layout from memory (a hand-checked
case flips it), ranked both ways, and resolved by the engine exactly as by the planner."""
import math
import os

import pytest
import torch

from megatron_glmd.config import ConfigError, load_run_config, preset, run_config_from_dict
from megatron_glmd.model.partition import run_partition
from megatron_glmd.plan.build import build_plan
from megatron_glmd.plan.checkpointing import choose_checkpointing
from megatron_glmd.plan.hardware import Hardware
from megatron_glmd.plan.memory import stage_vector_parameter_count
from megatron_glmd.plan.search import rank_layouts
from tests.distill.synthetic import SyntheticGLMSamples
from tests.distributed import run_distributed

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "configs", "distill_10b_2b.yaml")
GiB = 2 ** 30


@pytest.mark.parametrize("value, ok", [("auto", True), ("true", True), ("false", True), ("yes_please", False),
                                       ("3", False)])
def test_config_accepts_true_false_auto(value, ok):
    if ok:
        cfg = load_run_config(CONFIG, [f"train.checkpoint_activations={value}"])
        assert cfg.train.checkpoint_activations == {"auto": "auto", "true": True, "false": False}[value]
        cfg.train.validate(dp=4)
        return
    with pytest.raises(ConfigError, match="checkpoint_activations"):
        load_run_config(CONFIG, [f"train.checkpoint_activations={value}"]).train.validate(dp=4)


def test_partition_refuses_an_unresolved_auto():
    cfg = load_run_config(CONFIG)
    assert cfg.train.checkpoint_activations == "auto"
    with pytest.raises(ConfigError, match="must be resolved to true or false"):
        run_partition(cfg, preset("glm-10b"))


SMALL = ["mode=pretrain", "model.num_layers=4", "model.hidden_size=1024", "model.num_attention_heads=16",
         "model.vocab_size=1000", "model.max_sequence_length=512", "train.micro_batch_size=8",
         "train.global_batch_size=8", "parallel.tp=1", "parallel.pp=1"]


def small_case_by_hand():
    """GiB needed (reserve 4) with and without per-layer checkpointing: a 4-layer GLM of hidden 1024,
    16 heads, vocabulary 1000 (padded to 1024), sequence 512, micro-batch 8, one micro-batch per step,
    bf16, on one GPU. Formulas of megatron_glmd/plan/memory.py and model/activation_memory.py."""
    h, a, v, s, b, layers = 1024, 16, 1024, 512, 8, 4
    n = layers * (12 * h * h + 13 * h) + v * h + 2 * (512 + 1) * h + 2 * h
    state = (2 + 2 + 4) * n + 12 * n              # BF16_Optimizer; DP = 1 holds the whole fp32 state
    transient = 4 * n                             # both param groups in one fp32 flatten
    a_layer = s * b * h * (10 + 24 + 5 * a * s / h)
    logits = 2 * 2 * s * b * v
    on = 1 * (layers * 2 * s * b * h + s * s * b + 2 * s * b * h) + a_layer + 2 * 2 * s * b * h + logits
    off = 1 * (layers * a_layer + s * s * b + 2 * s * b * h) + 2 * 2 * s * b * h + logits
    return [(state + max(act, transient)) / GiB + 4 for act in (off, on)]


def test_auto_flips_on_when_memory_is_tight_hand_checked():
    off, on = small_case_by_hand()
    assert on < 6 < off                           # 5.34 and 6.17 GiB
    cfg = load_run_config(CONFIG, SMALL)
    for memory, enabled, fits in ((40, False, True), (6.5, False, True), (6, True, True), (5, True, False)):
        plan = build_plan(cfg, nodes=1, gpus_per_node=1, hardware=Hardware(gpu_memory_gib=memory))
        assert plan.checkpointing.needed_off_gib == pytest.approx(off, rel=1e-12)
        assert plan.checkpointing.needed_on_gib == pytest.approx(on, rel=1e-12)
        assert plan.checkpoint_activations is enabled, memory
        assert plan.needed_gib == pytest.approx(on if enabled else off, rel=1e-12)
        assert plan.fits is fits
        assert ("auto -> on" if enabled else "auto -> off") in plan.checkpointing.describe()
    # Explicit values are kept whatever the memory; without a budget (CPU processes) auto is off.
    assert build_plan(load_run_config(CONFIG, SMALL + ["train.checkpoint_activations=true"]), nodes=1,
                      gpus_per_node=1).checkpoint_activations is True
    assert choose_checkpointing(cfg, None, 1, 0.0, 4.0).enabled is False


def test_rank_lists_both_variants_and_marks_autos_choice():
    cfg = load_run_config(CONFIG, SMALL)

    def at_mb8(plans):
        return [p for p in plans if p.micro_batch == 8]

    ranking = rank_layouts(cfg, nodes=1, gpus_per_node=1, teacher=None, hardware=Hardware(gpu_memory_gib=6))
    assert [(p.checkpoint_activations, ranking.is_auto_choice(p)) for p in at_mb8(ranking.plans)] == [(True, True)]
    assert [p.checkpoint_activations for p in at_mb8(ranking.over_memory)] == [False]
    ranking = rank_layouts(cfg, nodes=1, gpus_per_node=1, teacher=None, hardware=Hardware(gpu_memory_gib=40))
    # Without recompute the step is shorter: off first, and it is auto's choice.
    plans = at_mb8(ranking.plans)
    assert [(p.checkpoint_activations, ranking.is_auto_choice(p)) for p in plans] == [(False, True), (True, False)]
    assert plans[0].step.total < plans[1].step.total


ENGINE = {"mode": "pretrain", "model": {"preset": "tiny-student", "num_layers": 4, "hidden_size": 64,
                                        "num_attention_heads": 4, "vocab_size": 300, "max_sequence_length": 64,
                                        "hidden_dropout": 0.0, "attention_dropout": 0.0},
          "train": {"iterations": 1, "micro_batch_size": 8, "global_batch_size": 8, "precision": "bf16",
                    "checkpoint_activations": "auto"},
          "data": {"train_prefix": "synthetic", "seq_length": 64},
          "logging": {"log_interval": 100, "progress_bar": False}}


def _engine_choice(rank, world, memory_gib, save_dir):
    import megatron_glmd.engine.trainer as trainer_module

    trainer_module.device_memory_gib = lambda: memory_gib   # this rank's "GPU"
    lines = []
    values = dict(ENGINE, checkpoint={"save_dir": save_dir})
    trainer = trainer_module.Trainer(run_config_from_dict(values), SyntheticGLMSamples(64, 64, 300, seed=1),
                                     log=lines.append)
    loss = trainer.train_step()["loss"]
    optimizer = trainer.engine.optimizer      # what plan/deepspeed_state.py models, as DeepSpeed built it
    state = (type(optimizer).__name__, [(t.dtype, t.numel()) for t in optimizer.fp32_groups_gradients_flat],
             [sum(p.numel() for p in group) for group in optimizer.bf16_groups])
    return (trainer.cfg.train.checkpoint_activations, trainer.student_config.checkpoint_activations,
            trainer.stage.student.config.checkpoint_activations, [p.student for p in trainer.partition],
            [line for line in lines if "checkpointing" in line], loss, state)


def test_engine_resolves_auto_as_the_planner_does(tmp_path):
    cfg = run_config_from_dict(ENGINE)
    off = build_plan(cfg, nodes=1, gpus_per_node=1, hardware=Hardware(gpu_memory_gib=40)).checkpointing
    assert off.needed_on_gib < off.needed_off_gib          # recompute saves memory in this small case
    budgets = {False: off.needed_off_gib + 0.01, True: (off.needed_on_gib + off.needed_off_gib) / 2}
    for expected, memory in budgets.items():
        plan = build_plan(cfg, nodes=1, gpus_per_node=1, hardware=Hardware(gpu_memory_gib=memory))
        assert plan.checkpoint_activations is expected
        resolved, model, built, ranges, logged, loss, state = run_distributed(1, _engine_choice, memory,
                                                                             str(tmp_path / str(expected)))[0]
        assert resolved is expected and model is expected and built is expected
        assert ranges == [s.layers.student for s in plan.stages]
        assert logged == [plan.checkpointing.describe()]
        assert math.isfinite(loss)
        # The engine's optimizer is the one the planner models: BF16_Optimizer, whose fp32 gradient
        # buffers span each whole param group (not a DP shard), with the planner's (decay, no decay) split.
        name, buffers, groups = state
        n = plan.stages[0].memory.student_params
        vectors = stage_vector_parameter_count(cfg.model, 1, True, plan.stages[0].layers.student)
        assert name == "BF16_Optimizer" and groups == [n - vectors, vectors]
        assert [dtype for dtype, _ in buffers] == [torch.float32] * 2
        assert all(0 <= numel - g < 4 for (_, numel), g in zip(buffers, groups))   # alignment padding only


def _save_then_resolve(rank, world, memory_gib, save_dir, resume_memory_gib):
    """Train one step under ``memory_gib`` and save; then resolve auto for a resume of that run and
    for a fresh run under ``resume_memory_gib``."""
    import megatron_glmd.engine.trainer as trainer_module
    from megatron_glmd.checkpoint.checks import resolve_auto_checkpointing

    trainer_module.device_memory_gib = lambda: memory_gib
    values = dict(ENGINE, checkpoint={"save_dir": save_dir})
    trainer = trainer_module.Trainer(run_config_from_dict(values), SyntheticGLMSamples(64, 64, 300, seed=1),
                                     log=lambda line: None)
    trainer.train_step()
    trainer.save()
    resumed, why = resolve_auto_checkpointing(run_config_from_dict(values), None, 1, resume_memory_gib, 0.0)
    fresh = dict(ENGINE, checkpoint={"save_dir": save_dir + "-fresh"})
    fresh_cfg, _ = resolve_auto_checkpointing(run_config_from_dict(fresh), None, 1, resume_memory_gib, 0.0)
    return (trainer.cfg.train.checkpoint_activations, resumed.train.checkpoint_activations,
            fresh_cfg.train.checkpoint_activations, why)


def test_a_resumed_run_keeps_its_checkpoints_setting(tmp_path):
    """auto must not flip on resume (another DP size or GPU): the partition, and so each stage's
    files, depends on it."""
    off = build_plan(run_config_from_dict(ENGINE), nodes=1, gpus_per_node=1,
                     hardware=Hardware(gpu_memory_gib=40)).checkpointing
    tight = (off.needed_on_gib + off.needed_off_gib) / 2
    trained, resumed, fresh, why = run_distributed(1, _save_then_resolve, tight, str(tmp_path / "run"), 1000.0)[0]
    assert trained is True and resumed is True and fresh is False
    assert "kept from the checkpoint this run resumes" in why

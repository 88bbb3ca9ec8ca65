"""The time model against a hand computation of the 40-GPU 10B->2B step (layer ranges and per-stage
parameter counts from the plan, everything else by hand from the formulas in megatron_glmd/plan/cost.py's
and megatron_glmd/plan/deepspeed_state.py's docstrings)."""
import os

import pytest

from megatron_glmd.config import load_run_config, preset
from megatron_glmd.plan.build import build_plan
from megatron_glmd.plan.hardware import Hardware

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "configs", "distill_10b_2b.yaml")
L2B, L10B = 104_857_600, 411_041_792        # forward FLOPs per token of one layer (tests/model/test_flops.py)
PEAK, EFF, NVLINK, IB, LAT, LAUNCH = 312e12, 0.6, 240e9, 20e9, 10e-6, 8e-6
SEQ, H_S, H_T = 512, 2048, 4096
# kernels per layer (plan/launches.py COUNTS, measured by count_layer_ops): GLM with dropout 0.1, compiled
# (model.compile auto compiles on CUDA): forward, recompute, backward, teacher forward; and eager
FORWARD, RECOMPUTE, BACKWARD, TEACHER = 33, 36, 27, 11
EAGER_FORWARD, EAGER_BACKWARD, EAGER_TEACHER = 34, 30, 17


def padded(tp):
    return -(-50257 // (128 * tp)) * (128 * tp)


def vectors(tp, layers, last):
    """1-D parameters (the optimizer's no-decay group) of one TP rank of a student stage, by hand: QKV bias
    3h/t, attention-output bias h, MLP biases 4h/t + h, two LayerNorms 4h; the final LayerNorm 2h."""
    return layers * (3 * H_S // tp + H_S + 4 * H_S // tp + H_S + 4 * H_S) + (2 * H_S if last else 0)


def hand_dp(stage, tp, pp, dp, bandwidth):
    """DeepSpeed's DP reduction of a stage by hand: fp32 all-reduces of the param groups, 2(d-1)/d x 4 B/param
    on the ring, one per bucket (the decay group alone when it holds more than 5e8 elements, else both
    together), then one bf16 all-gather per group, (d-1)/d x 2 B/param."""
    n = stage.memory.student_params
    vec = vectors(tp, stage.layers.student[1] - stage.layers.student[0], stage.pp_rank == pp - 1)
    buckets = 2 if n - vec > 5e8 else 1
    return (buckets + 2) * LAT + (dp - 1) / dp * n * (2 * 4 + 2) / bandwidth


def hand_step(plan, tp, pp, dp, recompute=True):
    """Seconds per step, by hand; every stage boundary leaves a node when PP=5 (one stage per node)."""
    m = 64 // dp
    all_reduce = lambda h: LAT + 2 * (tp - 1) / tp * SEQ * h * 2 / NVLINK if tp > 1 else 0.0  # noqa: E731
    forward, backward = SEQ * (H_S + H_T) * 2, SEQ * H_S * 2
    times = []
    for k, s in enumerate(plan.stages):
        n_s = s.layers.student[1] - s.layers.student[0]
        n_t = s.layers.teacher[1] - s.layers.teacher[0]
        first, last = k == 0, k == pp - 1
        passes = 4 if recompute else 3
        flops = n_s * passes * L2B + n_t * L10B + (3 * 2 * H_S * padded(tp) + 2 * H_T * padded(tp) if last else 0)
        compute = flops * SEQ / (tp * PEAK * EFF)
        tp_comm = (2 * (passes - 1) * n_s + first + last) * all_reduce(H_S) + (2 * n_t + first) * all_reduce(H_T)
        launches = n_s * (FORWARD + (RECOMPUTE if recompute else 0) + BACKWARD) + n_t * TEACHER
        sends = (0 if first else 2) + (0 if last else 2)
        p2p = sends * LAT + ((0 if first else 1) + (0 if last else 1)) * (forward + backward) / IB
        times.append(max(compute + tp_comm, launches * LAUNCH) + p2p)
    tie = LAT + padded(tp) // tp * H_S * 4 / IB
    dp_reduce = max(hand_dp(s, tp, pp, dp, NVLINK) for s in plan.stages)
    return (m + pp - 1) * max(times) + tie + (dp_reduce if dp > 1 else 0.0)


@pytest.mark.parametrize("tp, dp", [(2, 4), (4, 2), (1, 8)])
def test_step_time_hours_mfu_hfu_by_hand(tp, dp):
    cfg = load_run_config(CONFIG, [f"parallel.tp={tp}", "parallel.pp=5", "train.checkpoint_activations=true"])
    plan = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"), hardware=Hardware())
    step = hand_step(plan, tp, 5, dp)
    assert plan.step.total == pytest.approx(step, rel=1e-9)
    assert sum(plan.step.parts().values()) == pytest.approx(step, rel=1e-9)
    assert plan.hours == pytest.approx(150_000 * step / 3600, rel=1e-9)
    model = 3 * (36 * L2B + 2 * H_S * 50304) + 48 * L10B + 2 * H_T * 50304        # MFU: no recompute
    hardware = model + 36 * L2B + (3 * 2 * H_S + 2 * H_T) * (padded(tp) - 50304)  # + recompute, TP padding
    assert plan.mfu == pytest.approx(model * 64 * SEQ / (step * 40 * PEAK), rel=1e-9)
    assert plan.hfu == pytest.approx(hardware * 64 * SEQ / (step * 40 * PEAK), rel=1e-9)
    assert plan.bubble == pytest.approx(4 / (64 // dp + 4))


def test_time_differs_between_layouts_with_the_same_flops():
    """The issue: TP=1/PP=5/DP=8 (bubble 33%) and TP=4/PP=5/DP=2 (11%) used to print the same hours."""
    hours = {}
    for tp in (1, 4):
        cfg = load_run_config(CONFIG, [f"parallel.tp={tp}", "parallel.pp=5"])
        hours[tp] = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b")).hours
    assert abs(hours[1] - hours[4]) / hours[4] > 0.02


def test_dp_over_infiniband_when_a_stage_spans_nodes():
    """TP=1, PP=2, DP=20 puts a stage on 2.5 nodes: its DP traffic crosses InfiniBand. It holds
    more than 5e8 matrix parameters on its larger stage, so DeepSpeed all-reduces its two param groups as two buckets (two
    latencies, 2(d-1)/d x 4 B/param in all) and all-gathers each group's bf16 weights."""
    cfg = load_run_config(CONFIG, ["parallel.tp=1", "parallel.pp=2", "train.global_batch_size=40"])
    plan = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"))
    big = max(plan.stages, key=lambda s: s.memory.student_params)
    n = big.memory.student_params
    assert n - vectors(1, big.layers.student[1] - big.layers.student[0], big.pp_rank == 1) > 5e8
    assert plan.step.dp_comm == pytest.approx(4 * LAT + 19 / 20 * n * (2 * 4 + 2) / IB, rel=1e-9)


def test_no_time_model_on_cpu():
    cfg = load_run_config(CONFIG)
    plan = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"),
                      hardware=Hardware(gpu_memory_gib=0.0, peak_tflops=0.0))
    assert plan.step is None and plan.hours is None and plan.mfu is None and plan.fits


def test_pretrain_plan_partitions_the_student_alone():
    cfg = load_run_config(CONFIG, ["mode=pretrain", "train.checkpoint_activations=true"])
    plan = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=None)
    assert all(s.layers.teacher is None and s.flops.teacher == 0 for s in plan.stages)
    # By hand: 36 layers and the logits (1.5 layers) on 5 stages: 4 x 7 + 7 < 36, so some stage holds
    # 8 layers, 8 x 4 L2B per token, which the partition reaches.
    layer, logits = 4 * L2B, 3 * 2 * H_S * padded(2)
    mean = (36 * layer + logits) / 5
    assert max(s.flops.total for s in plan.stages) == 8 * layer
    assert plan.flops_spread[0] == pytest.approx(8 * layer / mean - 1, rel=1e-12)
    assert plan.step.total == pytest.approx((16 + 4) * max(s.time.total for s in plan.stages) + plan.step.tie_comm
                                            + plan.step.dp_comm, rel=1e-12)


def test_step_time_without_checkpointing_by_hand():
    """The config's auto at TP=2 PP=5 DP=4 is off: no recomputed forward, two TP all-reduces fewer per
    student layer, 23 launches fewer; issue 15 quoted the model's 0.232 s/step without against 0.257 s with
    it before the DP and launch terms changed."""
    cfg = load_run_config(CONFIG)
    plan = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"))
    assert plan.checkpoint_activations is False
    assert plan.step.total == pytest.approx(hand_step(plan, 2, 5, 4, recompute=False), rel=1e-9)
    on = build_plan(load_run_config(CONFIG, ["train.checkpoint_activations=true"]), nodes=5, gpus_per_node=8,
                    teacher=preset("glm-10b"))
    assert plan.step.total < on.step.total


def test_launch_bound_stage_by_hand():
    """At TP=4 the GPU time of a stage halves while its launches stay: with eager layers
    (model.compile off) stage 1 (10 student, 8 teacher layers, no recompute: 10 x (34 + 30) + 8 x 17 = 776
    launches) becomes launch-bound at 8 us per launch, and its micro-batch costs the host's time; at
    --launch-us 0 no stage is."""
    cfg = load_run_config(CONFIG, ["parallel.tp=4", "model.compile=off"])
    plan = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"))
    for s in plan.stages:
        n_s = s.layers.student[1] - s.layers.student[0]
        n_t = s.layers.teacher[1] - s.layers.teacher[0]
        launch = (n_s * (EAGER_FORWARD + EAGER_BACKWARD) + n_t * EAGER_TEACHER) * LAUNCH
        assert s.time.launch == pytest.approx(launch, rel=1e-12)
        assert s.time.total == pytest.approx(max(s.time.compute + s.time.tp_comm, launch) + s.time.p2p, rel=1e-12)
    assert plan.stages[1].layers.student == (6, 16) and plan.stages[1].layers.teacher == (11, 19)
    assert plan.stages[1].time.launch == pytest.approx(776 * LAUNCH)
    assert plan.launch_bound_stages == [1]
    assert plan.step.parts()["launch wait"] > 0
    assert sum(plan.step.parts().values()) == pytest.approx(plan.step.total, rel=1e-12)
    quiet = build_plan(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"), hardware=Hardware(launch_us=0))
    assert quiet.launch_bound_stages == [] and quiet.step.total < plan.step.total

"""Model state and DP reduction against hand-computed figures and against DeepSpeed's own code paths.

The bytes per parameter and the bucket rule come from DeepSpeed 0.19.8's source (cited in
megatron_glmd/plan/deepspeed_state.py); here the parameter counts are recomputed by hand, and the
bucket rule is checked against DeepSpeed's ``allreduce_no_retain`` itself and torch's flatten.
"""
import math
import os

import pytest
import torch
from deepspeed.runtime.engine import DeepSpeedEngine
from torch._utils import _flatten_dense_tensors

from megatron_glmd.config import load_run_config, preset
from megatron_glmd.plan.build import build_plan
from megatron_glmd.plan.cost import dp_seconds
from megatron_glmd.plan.deepspeed_state import allreduce_buckets, dp_transient_bytes
from megatron_glmd.plan.hardware import Hardware

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "configs", "distill_10b_2b.yaml")
H, VOCAB_TP2 = 2048, 50432          # GLM-2B hidden; 50265 ids padded to 128 x TP=2
GiB = 2 ** 30


def student_params_by_hand(layers, first, last, tp=2):
    """One TP rank of a GLM-2B stage: per layer QKV (3h/t x h + 3h/t), attention output (h x h/t + h), MLP
    (4h/t x h + 4h/t, h x 4h/t + h), four LayerNorm vectors; the word-table shard and two position
    tables (1025 x h) on the first stage; the final LayerNorm and the tied table's copy on the last."""
    h, f = H, 4 * H
    layer = (3 * h // tp * h + 3 * h // tp) + (h * h // tp + h) + (f // tp * h + f // tp) + (h * f // tp + h) + 4 * h
    n = layers * layer
    if first:
        n += VOCAB_TP2 // tp * h + 2 * 1025 * h
    if last:
        n += 2 * h + VOCAB_TP2 // tp * h
    return n


def plan_10b(*sets):
    return build_plan(load_run_config(CONFIG, list(sets)), nodes=5, gpus_per_node=8, teacher=preset("glm-10b"))


@pytest.mark.parametrize("checkpoint", ["true", "false"])
def test_bf16_optimizer_keeps_8_bytes_per_parameter_and_a_flatten_of_the_gradients(checkpoint):
    plan = plan_10b(f"train.checkpoint_activations={checkpoint}")
    assert (plan.tp, plan.pp, plan.dp) == (2, 5, 4)
    for s in plan.stages:
        k, layers = s.pp_rank, s.layers.student[1] - s.layers.student[0]
        n = student_params_by_hand(layers, k == 0, k == 4)
        m = s.memory
        assert m.student_params == n
        assert m.student_weights_grads == (2 + 2 + 4) * n       # bf16 weights, bf16 grads, fp32 accumulator
        assert m.optimizer == math.ceil(12 * n / 4)              # fp32 master + Adam m, v over DP=4
        assert m.grad_bucket == 0
        # Every stage has fewer than 5e8 parameters per GPU: both param groups share one bucket, whose
        # flatten is a fresh fp32 copy of all of them.
        assert n < 5e8 and m.dp_transient == 4 * n
        state = m.student_weights_grads + m.optimizer + m.teacher_weights
        assert m.total_bytes == state + max(m.student_activations + m.teacher_activations, 4 * n)
    if checkpoint == "false":
        # Stage 0 (6 student layers, the embeddings): 206,952,448 parameters, a 0.77 GiB fp32 flatten.
        stage0 = plan.stages[0]
        assert stage0.layers.student == (0, 6)
        assert stage0.memory.dp_transient / GiB == pytest.approx(4 * 206_952_448 / GiB)
        # On the last stage the flatten outgrows the activations of the 4 micro-batches in flight:
        last = plan.stages[-1].memory
        assert last.dp_transient > last.student_activations + last.teacher_activations
        assert last.total_bytes == last.student_weights_grads + last.optimizer + last.teacher_weights + last.dp_transient


@pytest.mark.parametrize("precision, b", [("fp16", 2), ("fp32", 4)])
def test_zero_stage1_state_of_fp16_and_fp32(precision, b):
    plan = plan_10b("train.checkpoint_activations=true", f"train.precision={precision}")
    for s in plan.stages:
        n, m = s.memory.student_params, s.memory
        assert m.student_weights_grads == 2 * b * n
        assert m.optimizer == math.ceil(12 * n / 4)              # the fp32 master is a clone at either dtype
        assert m.grad_bucket == 500_000_000 * b                  # setup_buckets: reduce_bucket_size elements
        # The pipelined reduction's fp32 bucket and the flat gradient partition (+ its fp32 copy under fp16)
        assert m.dp_transient == 500_000_000 * 4 + math.ceil(n / 4) * (b + (4 if b == 2 else 0))
        assert m.teacher_weights == b * s.memory.teacher_params


def test_bucket_rule_is_deepspeeds_allreduce_no_retain():
    """DeepSpeed's own bucketing, called with a stand-in engine that records each bucket it reduces."""
    class Recorder:
        def __init__(self):
            self.buckets = []

        def allreduce_and_copy(self, small_bucket, dp_group, dp_world_size=None):
            self.buckets.append([t.numel() for t in small_bucket])

    for sizes, limit in (([6, 5, 3], 10), ([4, 2], 10), ([11, 1], 10), ([3, 3, 3, 3, 3], 5), ([10, 1], 10)):
        rec = Recorder()
        DeepSpeedEngine.allreduce_no_retain(rec, [torch.zeros(n) for n in sizes], dp_group=None,
                                            numel_per_bucket=limit)
        assert allreduce_buckets(sizes, limit) == rec.buckets, (sizes, limit)


def test_flatten_copies_two_tensors_and_views_one():
    """What makes the transient: torch's flatten (DeepSpeed's ``self.flatten``) concatenates several
    tensors into new memory but returns a view of a single one."""
    a, b = torch.zeros(6), torch.zeros(3)
    assert _flatten_dense_tensors([a]).data_ptr() == a.data_ptr()
    assert _flatten_dense_tensors([a, b]).data_ptr() not in (a.data_ptr(), b.data_ptr())
    # Hence: both groups in one bucket -> a copy of both; a decay group above 5e8 elements -> views only.
    assert dp_transient_bytes("bf16", (400_000_000, 1_000_000), dp=4) == 4 * 401_000_000
    assert dp_transient_bytes("bf16", (600_000_000, 1_000_000), dp=4) == 0


@pytest.mark.parametrize("dp, inter_node", [(4, False), (8, True), (1, False)])
def test_dp_reduction_is_an_fp32_ring_all_reduce_plus_a_weight_all_gather(dp, inter_node):
    """Ring all-reduce: each rank sends and receives 2(d-1)/d x B of fp32 gradients (4 B/param); then
    (d-1)/d x 2 B/param of bf16 weights are all-gathered, one collective per param group."""
    hw = Hardware()
    bw = (hw.ib_gbps if inter_node else hw.nvlink_gbps) * 1e9
    lat = hw.comm_latency_us * 1e-6
    decay, vec = 300_000_000, 1_000_000
    expected = 0.0 if dp == 1 else (lat + 2 * (dp - 1) / dp * 4 * (decay + vec) / bw
                                    + 2 * lat + (dp - 1) / dp * 2 * (decay + vec) / bw)
    assert dp_seconds(hw, (decay, vec), dp, 2, inter_node) == pytest.approx(expected, rel=1e-12)

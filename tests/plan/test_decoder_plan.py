"""The planner on the decoder family: parameter counts and the no-decay group by hand and against
models built on the meta device (TP 1/2, PP 1/2), the TP all-reduces and kernel launches of a decoder
layer, and no embedding tie for an untied head."""
import dataclasses
import math
import os

import pytest
import torch

from megatron_glmd.config import from_dict, load_run_config, preset, run_config_from_dict
from megatron_glmd.engine.optim import param_groups as optimizer_groups
from megatron_glmd.model import DecoderStage
from megatron_glmd.parallel import ParallelGrid
from megatron_glmd.plan.build import build_plan, param_groups
from megatron_glmd.plan.cost import ALL_REDUCE, collective_seconds, tie_seconds
from megatron_glmd.plan.hardware import Hardware
from megatron_glmd.plan.launches import COUNTS, DECODER_EAGER, layer_launches
from tests.distributed import run_distributed

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
LLAMA = os.path.join(REPO, "launch", "configs", "distill_llama3_8b_1b.yaml")

# A small decoder: h 64, 8 heads of 8, 2 KV heads, SwiGLU 96, Qwen2's Q/K/V biases, untied head.
SMALL = dict(architecture="decoder", num_layers=4, hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
             ffn_hidden_size=96, vocab_size=1000, max_sequence_length=64, rope_theta=10000.0, qkv_bias=True,
             tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0)


def small_run(tp, pp, student=None, teacher=None, **train):
    values = {"mode": "distill", "model": {"compile": "off", **(student or SMALL)}, "parallel": {"tp": tp, "pp": pp},
              "train": {"micro_batch_size": 1, "global_batch_size": 4, "precision": "bf16",
                        "checkpoint_activations": False, **train},
              "data": {"train_prefix": "x", "seq_length": 32, "tokenizer_type": "hf"}}
    cfg = run_config_from_dict(values)
    return cfg, from_dict(teacher or {**SMALL, "num_layers": 6, "hidden_size": 128, "ffn_hidden_size": 192})


def test_small_decoder_stage_counts_by_hand():
    """TP=2, PP=2 (DP=1 on 4 GPUs). One layer on one TP rank: Q 32 rows x 64 + 32 bias, K|V 2 x 1 KV head
    x 8 = 16 rows x 64 + 16 bias, output 64 x 32, gate|up 2 x 48 x 64, down 64 x 48, two RMSNorms 2 x 64
    = 14,512, of which 1-D 32 + 16 + 128 = 176. Vocabulary 1000 pads to 1024 (128 x TP): 512 rows x 64
    = 32,768 for the embedding (first stage) and for the untied lm_head (last); final RMSNorm 64."""
    cfg, teacher = small_run(2, 2)
    plan = build_plan(cfg, nodes=1, gpus_per_node=4, teacher=teacher)
    layer, vectors = 32 * 64 + 32 + 16 * 64 + 16 + 64 * 32 + 2 * 48 * 64 + 64 * 48 + 2 * 64, 32 + 16 + 2 * 64
    assert layer == 14_512
    (s0, t0), (s1, t1) = [(s.layers.student, s.layers.teacher) for s in plan.stages]
    first, last = plan.stages
    n0, n1 = s0[1] - s0[0], s1[1] - s1[0]
    assert n0 + n1 == 4 and n0 >= 1
    assert first.memory.student_params == n0 * layer + 32_768
    assert last.memory.student_params == n1 * layer + 64 + 32_768
    assert param_groups(cfg, first) == (n0 * (layer - vectors) + 32_768, n0 * vectors)
    assert param_groups(cfg, last) == (n1 * (layer - vectors) + 32_768, n1 * vectors + 64)
    # Teacher (h 128, 8 heads of 16, 2 KV heads, SwiGLU 192): Q 64 x 128 + 64, K|V 32 x 128 + 32,
    # output 128 x 64, gate|up|down 3 x 96 x 128, norms 256 = 57,696; weights only, bf16.
    t_layer = 64 * 128 + 64 + 32 * 128 + 32 + 128 * 64 + 3 * 96 * 128 + 256
    assert t_layer == 57_696
    assert first.memory.teacher_params == (t0[1] - t0[0]) * t_layer + 512 * 128
    assert last.memory.teacher_params == (t1[1] - t1[0]) * t_layer + 128 + 512 * 128
    assert first.memory.teacher_weights == 2 * first.memory.teacher_params


def test_replicated_kv_heads_are_counted_whole():
    """TP=4 with 2 KV heads: every rank stores both (2 x 2 x 8 = 32 rows of K|V, 32 bias values) and
    uses one; Q is 2 heads x 8 = 16 rows."""
    cfg, teacher = small_run(4, 1)
    plan = build_plan(cfg, nodes=1, gpus_per_node=4, teacher=teacher)
    layer = 16 * 64 + 16 + 32 * 64 + 32 + 64 * 16 + 3 * 24 * 64 + 128
    vocab_rows = 1024 // 4
    assert plan.stages[0].memory.student_params == 4 * layer + 64 + 2 * vocab_rows * 64
    assert param_groups(cfg, plan.stages[0])[1] == 4 * (16 + 32 + 128) + 64


def test_decoder_tp_all_reduces_and_launches_by_hand():
    """Per student layer and micro-batch: 2 forward all-reduces (attention output, down), 3 backward
    (the inputs of Q, K|V, gate|up), 2 more with recompute; at TP=4 with 2 KV heads also the K|V weight's
    gradient (32 x 64 + 32 bf16 values). Teacher layers: 2. The first stage adds the embedding's, the last
    the logits' backward. Kernels: 40 + 59 (+ 41 with recompute) per student layer, Q/K/V biases + 2 in
    backward, 40 per teacher layer (tools/benchmarks/results/decoder_layer_ops_cpu.json)."""
    hw = Hardware()
    for tp, recompute in ((2, False), (4, True)):
        cfg, teacher = small_run(tp, 1, checkpoint_activations=recompute)
        plan = build_plan(cfg, nodes=1, gpus_per_node=tp, teacher=teacher, hardware=hw)
        t = plan.stages[0].time
        tokens = 32
        act = lambda h: collective_seconds(hw, tokens * h * 2, tp, ALL_REDUCE, False)  # noqa: E731
        kv_grad = collective_seconds(hw, (32 * 64 + 32) * 2, tp, ALL_REDUCE, False) if tp == 4 else 0.0
        per_layer = 2 + 3 + (2 if recompute else 0)
        expected = (4 * per_layer + 2) * act(64) + 4 * kv_grad + (2 * 6 + 1) * act(128)
        assert t.tp_comm == pytest.approx(expected, rel=1e-12)
        kernels = 4 * (40 + (41 if recompute else 0) + 59 + 2) + 6 * 40
        assert t.launch == pytest.approx(kernels * hw.launch_us * 1e-6, rel=1e-12)
    assert layer_launches(preset("llama-3.2-1b"), compiled=False) == DECODER_EAGER
    assert layer_launches(preset("glm-2b"), compiled=False) == COUNTS["glm", True, False]
    assert layer_launches(preset("tiny-decoder-student"), compiled=False).student(False) == 59 + 69
    # model.compile auto compiles on CUDA: the planner charges the compiled counts by default
    assert layer_launches(preset("llama-3.2-1b")) == COUNTS["decoder", False, True]
    assert layer_launches(preset("glm-2b")) == COUNTS["glm", True, True]


def test_an_untied_head_has_no_embedding_tie():
    hw = Hardware()
    untied = from_dict(SMALL)
    tied = untied.replace(tie_word_embeddings=True)
    assert tie_seconds(hw, untied, 2, 2, 4, False) == 0.0
    assert tie_seconds(hw, tied, 2, 2, 4, False) == collective_seconds(hw, 512 * 64 * 4, 2, ALL_REDUCE, False)
    assert tie_seconds(hw, tied, 2, 1, 4, False) == 0.0


def test_llama_stage_rows_by_hand():
    """launch/configs/distill_llama3_8b_1b.yaml on 40 GPUs (TP=2 PP=5 DP=4). Llama-3-8B layer on one TP
    rank: Q 4096 x 2048, K|V 2 x 4 KV heads x 128 = 1024 rows x 4096, output 2048 x 4096, SwiGLU
    3 x 4096 x 7168, norms 2 x 4096 = 109,060,096; vocabulary 128,256 = 64,128 rows per rank. Llama-3.2-1B
    layer: Q 1024 x 2048, K|V 512 x 2048, output 2048 x 1024, SwiGLU 3 x 2048 x 4096, norms 4096
    = 30,412,800; its tied table on the first stage and a copy on the last."""
    plan = build_plan(load_run_config(LLAMA), nodes=5, gpus_per_node=8, teacher=preset("llama-3-8b"))
    assert (plan.tp, plan.pp, plan.dp) == (2, 5, 4)
    t_layer = 2048 * 4096 + 1024 * 4096 + 4096 * 2048 + 3 * 4096 * 7168 + 2 * 4096
    s_layer = 1024 * 2048 + 512 * 2048 + 2048 * 1024 + 3 * 2048 * 4096 + 2 * 2048
    assert (t_layer, s_layer) == (109_060_096, 30_412_800)
    assert sum(s.layers.student[1] - s.layers.student[0] for s in plan.stages) == 16
    assert sum(s.layers.teacher[1] - s.layers.teacher[0] for s in plan.stages) == 32
    for s in plan.stages:
        k, m = s.pp_rank, s.memory
        ns, nt = s.layers.student[1] - s.layers.student[0], s.layers.teacher[1] - s.layers.teacher[0]
        edge_s = (64_128 * 2048 if k == 0 else 0) + (2048 + 64_128 * 2048 if k == 4 else 0)
        edge_t = (64_128 * 4096 if k == 0 else 0) + (4096 + 64_128 * 4096 if k == 4 else 0)
        assert m.student_params == ns * s_layer + edge_s
        assert m.teacher_params == nt * t_layer + edge_t
        assert param_groups(plan_cfg := load_run_config(LLAMA), s)[1] == ns * 2 * 2048 + (2048 if k == 4 else 0)
        n = m.student_params
        assert m.student_weights_grads == 8 * n and m.optimizer == math.ceil(12 * n / 4)
        assert m.teacher_weights == 2 * m.teacher_params
    assert plan_cfg.model.tie_word_embeddings and plan.step.tie_comm > 0


def _built_counts(rank, world, stages, configs):
    """(all parameters, 1-D parameters) of each (config, pp_rank, pp, layers) built on the meta device."""
    group = ParallelGrid.build(tp_size=world).tp_group if world > 1 else None
    out = []
    for name, k, pp, layers in stages:
        stage = DecoderStage(from_dict(configs[name]), tp_group=group, pp_rank=k, pp_size=pp, layer_range=layers,
                             device="meta")
        decay, no_decay = optimizer_groups([stage], 0.1)
        out.append((sum(p.numel() for p in stage.parameters()),
                    sum(p.numel() for p in no_decay["params"]), sum(p.numel() for p in decay["params"])))
    return out


@pytest.mark.parametrize("tp", [1, 2])
def test_plan_counts_equal_models_built_on_the_meta_device(tp):
    """Every stage of every plan at TP=tp, PP 1 and 2: the planner's student and teacher parameters and
    its (decay, no decay) groups equal DecoderStage's tensors and engine/optim.py's groups. Shapes: the
    released Qwen2.5 pair (biases, tied student, untied teacher) and Llama pair, and small decoders with
    the KV heads replicated at TP=2 (1 KV head)."""
    pairs = {
        "qwen": (dataclasses.asdict(preset("qwen2.5-1.5b", vocab_size=152064)), dataclasses.asdict(preset("qwen2.5-7b"))),
        "llama": (dataclasses.asdict(preset("llama-3.2-1b")), dataclasses.asdict(preset("llama-3-8b"))),
        "small-kv1": ({**SMALL, "num_key_value_heads": 1, "tie_word_embeddings": True},
                      {**SMALL, "num_layers": 6, "num_key_value_heads": 1}),
    }
    configs, stages, expected = {}, [], []
    for name, (student, teacher) in pairs.items():
        configs[f"{name}-s"], configs[f"{name}-t"] = student, teacher
        for pp in (1, 2):
            cfg, t_cfg = small_run(tp, pp, student=student, teacher=teacher)
            plan = build_plan(cfg, nodes=1, gpus_per_node=tp * pp, teacher=t_cfg, hardware=Hardware(gpu_memory_gib=0))
            for s in plan.stages:
                stages += [(f"{name}-s", s.pp_rank, pp, s.layers.student), (f"{name}-t", s.pp_rank, pp, s.layers.teacher)]
                decay, vectors = param_groups(cfg, s)
                expected += [(s.memory.student_params, vectors, decay), s.memory.teacher_params]
    built = run_distributed(tp, _built_counts, stages, configs)[0] if tp > 1 else _built_counts(0, 1, stages, configs)
    for i, (name, k, pp, _) in enumerate(stages):
        want = expected[i]
        got = built[i] if name.endswith("-s") else built[i][0]
        assert got == want, (name, f"TP={tp} PP={pp} stage {k}")


def test_decoder_launch_counts_are_what_count_layer_ops_measures():
    """The planner's decoder constants are model/op_count.py's count of a tiny decoder layer (the count
    does not depend on the size: tools/benchmarks/results/decoder_layer_ops_cpu.json has llama-3.2-1b's
    equal); a torch that counts otherwise must re-measure them."""
    from megatron_glmd.model.op_count import count_layer_ops
    from megatron_glmd.plan.launches import DECODER_QKV_BIAS_BACKWARD

    plain = preset("tiny-decoder-student", hidden_dropout=0.0, attention_dropout=0.0)
    ops = count_layer_ops(plain, seq_length=16)
    assert (ops.forward, ops.recompute, ops.backward) == (DECODER_EAGER.forward, DECODER_EAGER.recompute,
                                                          DECODER_EAGER.backward)
    biased = count_layer_ops(plain.replace(qkv_bias=True), seq_length=16)
    assert biased.backward == ops.backward + DECODER_QKV_BIAS_BACKWARD and biased.forward == ops.forward

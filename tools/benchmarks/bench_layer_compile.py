"""``model.compile`` on the CPU, in one run: eager vs compiled step time and kernels per layer.

1. The quickstart's distillation step (tiny-student trained, tiny-teacher frozen, one stage,
   micro-batch 16 x sequence 128, no dropout, as ``glmd-quickstart`` runs it): median
   forward+backward time eager and with every layer compiled, and the first (compiling) step;
   eager and compiled steps alternate, so a shared machine's load shifts both alike.
2. One GLM-2B student layer at the 40-GPU plan's micro-batch 1 x sequence 512 (dropouts 0.1,
   per-layer recompute): median step time eager and compiled.
3. Kernels per layer (megatron_glmd.model.op_count.count_layer_ops: forward, recompute, backward)
   eager and compiled, for the student (dropouts 0.1) and without dropout (the teacher's
   forward), at the GLM-2B and tiny-student shapes; at the tiny shape also compiled with inductor's
   own RNG (``fallback_random`` off: fewer kernels, masks that differ from eager's).

Prints the JSON and saves it as tools/benchmarks/results/layer_compile_cpu.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from _common import median, save

import torch

from megatron_glmd.config import preset
from megatron_glmd.engine.pipeline import DistillStage
from megatron_glmd.model.attention import AttentionMask
from megatron_glmd.model.compile import COMPILE_KWARGS
from megatron_glmd.model.op_count import count_layer_ops
from megatron_glmd.model.partition import StageLayers
from megatron_glmd.model.glm_layers import GLMBlock
from megatron_glmd.parallel import ParallelGrid, model_parallel_seed
from megatron_glmd.parallel.random import checkpoint


def _interleaved(steps_by_name, steps: int):
    """First (compiling) step of each, then ``steps`` rounds alternating them: a shared machine's
    load shifts both alike. Returns {name: {first_step_s, median_step_s}}."""
    out = {}
    for name, step in steps_by_name.items():
        start = time.perf_counter()
        step()
        out[name] = {"first_step_s": time.perf_counter() - start, "times": []}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            step()
            out[name]["times"].append(time.perf_counter() - start)
    for name in out:
        out[name]["median_step_s"] = median(out[name].pop("times"))
    return out


def quickstart_step(compile: str, batch: int = 16, seq: int = 128):
    student = preset("tiny-student", compile=compile, hidden_dropout=0.0, attention_dropout=0.0,
                     max_sequence_length=seq)
    teacher = preset("tiny-teacher", compile=compile, hidden_dropout=0.0, attention_dropout=0.0,
                     max_sequence_length=seq)
    model_parallel_seed(1)
    layers = StageLayers((0, student.num_layers), (0, teacher.num_layers))
    stage = DistillStage(0, student, ParallelGrid.single(), layers, teacher).train()
    stage.student.init_weights(1)
    stage.teacher.init_weights(2)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, student.vocab_size, (batch, seq), generator=g)
    pos = torch.stack([torch.arange(seq).expand(batch, seq), torch.zeros(batch, seq, dtype=torch.long)], 1)
    sep, length = torch.full((batch,), seq // 2), torch.full((batch,), seq)

    def step():
        stage.zero_grad(set_to_none=True)
        s, t = stage((ids, pos, sep, length))
        (-(s.log_softmax(-1) * t.softmax(-1)).sum(-1).mean()).backward()
    return step


def glm2b_layer_step(compile: bool, seq: int = 512):
    config = preset("glm-2b")
    model_parallel_seed(1)
    layer = GLMBlock(config).train()
    if compile:
        layer.compile(**COMPILE_KWARGS)
    mask = AttentionMask.glm(torch.tensor([seq // 2]), torch.tensor([seq]), seq).prepare("sdpa")
    x = torch.randn(1, seq, config.hidden_size, requires_grad=True)

    def step():
        layer.zero_grad(set_to_none=True)
        checkpoint(layer, x, mask).sum().backward()
    return step


def op_counts(name: str, seq: int, inductor_rng: bool):
    out = {}
    for dropout in (0.1, 0.0):
        config = preset(name, hidden_dropout=dropout, attention_dropout=dropout)
        variants = [("eager", False, None), ("compiled", True, None)]
        if inductor_rng and dropout:
            variants.append(("compiled, inductor RNG", True, {"fallback_random": False}))
        for label, compiled, options in variants:
            print(f"counting {name} dropout={dropout} {label}", file=sys.stderr, flush=True)
            ops = count_layer_ops(config, seq_length=seq, compiled=compiled, compile_options=options)
            out[f"dropout={dropout} {label}"] = {**dataclasses.asdict(ops), "total": ops.total}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.manual_seed(0)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
              "load_average_before": os.getloadavg()}
    print("quickstart step", file=sys.stderr, flush=True)
    quick = _interleaved({"eager": quickstart_step("off"), "compiled": quickstart_step("on")}, args.steps)
    quick["eager_over_compiled"] = quick["eager"]["median_step_s"] / quick["compiled"]["median_step_s"]
    result["quickstart_distill_step_mb16_seq128"] = quick
    print("glm-2b layer step", file=sys.stderr, flush=True)
    layer = _interleaved({"eager": glm2b_layer_step(False), "compiled": glm2b_layer_step(True)},
                         max(3, args.steps // 3))
    layer["eager_over_compiled"] = layer["eager"]["median_step_s"] / layer["compiled"]["median_step_s"]
    result["glm2b_layer_step_mb1_seq512_recompute_dropout0.1"] = layer
    result["kernels_per_layer"] = {"glm-2b mb1 seq512": op_counts("glm-2b", 512, inductor_rng=False),
                                   "tiny-student mb1 seq128": op_counts("tiny-student", 128, inductor_rng=True)}
    result["load_average_after"] = os.getloadavg()
    save("layer_compile_cpu", result, args.out)


if __name__ == "__main__":
    main()

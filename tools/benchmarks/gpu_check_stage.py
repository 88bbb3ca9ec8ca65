"""Part 4 of `gpu_check.sh`: stage 0 of the 40-GPU GLM-10B -> GLM-2B run, at real size, on one GPU.

    python -m tools.benchmarks.gpu_check_stage --out OUT_DIR/stage_eager.json --mode eager
    python -m tools.benchmarks.gpu_check_stage --out OUT_DIR/stage_compiled.json --mode compiled

Built from the project's own model code (`GLMStage`) at TP=1 with the run's configuration
(`launch/configs/distill_10b_2b.yaml`, `parallel.tp=1`): the student's and the teacher's stage-0
layers as `run_partition` gives them at PP=5 (9 GLM-2B and 8 GLM-10B layers, embeddings included),
bf16 weights, micro-batch 1, sequence 512. One step: the teacher's forward (eval, no_grad, no
dropout), the student's forward with per-layer recompute, and the student's backward from a
random gradient of its output (what stage 1 would send back). Gradients accumulate in place, as
the engine keeps them.

Reported: wall time per step (timed without the profiler after two warm-up steps), GPU-busy
fraction (the union of the profiled kernel intervals per step over that wall time: below 1 means
the GPU waits for the host, i.e. launch-bound), the kernel count per step, the attention kernels
run (a flash / memory-efficient / cuDNN fused kernel, or the math path's softmax), the top kernels
by time, and the peak memory (`torch.cuda.max_memory_allocated`) against the planner's figure for
what the slice holds (`planned_bytes`). `--mode compiled` sets `model.compile` (torch.compile per
layer, issue 15 item 4); where ModelConfig has no such field the part says so and is "not run".
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
RUN_CONFIG = os.path.join(ROOT, "launch", "configs", "distill_10b_2b.yaml")
SLICE_OVERRIDES = ["parallel.tp=1", "train.checkpoint_activations=true"]   # the slice: with recompute
FUSED_ATTENTION = re.compile(r"flash|fmha|mem_eff|efficient|cudnn.*(sdpa|attn|attention)|sdpa", re.I)
SYNC_EVENT = re.compile(r"(Context|Stream|Event|Device) Sync")   # host waits, not GPU work, if recorded
ATTENTION_LIKE = re.compile(r"flash|fmha|mem_eff|efficient|sdpa|attn|attention|softmax", re.I)


def slice_setup(compile_layers: bool = False):
    """(run config, student config, teacher config, stage-0 layers, DP size of the 40-GPU layout)."""
    from megatron_glmd.config import ModelConfig, preset
    from megatron_glmd.config.run import load_run_config
    from megatron_glmd.model.partition import run_partition
    cfg = load_run_config(RUN_CONFIG, SLICE_OVERRIDES)
    teacher = preset("glm-10b", dtype=cfg.train.precision, hidden_dropout=0.0, attention_dropout=0.0)
    student = cfg.model.replace(dtype=cfg.train.precision, checkpoint_activations=cfg.train.checkpoint_activations)
    if compile_layers:
        if "compile" not in {f.name for f in dataclasses.fields(ModelConfig)}:
            raise NotImplementedError("ModelConfig has no `compile` field (issue 15 item 4's model.compile): "
                                      "the compiled slice cannot be built")
        student, teacher = student.replace(compile=True), teacher.replace(compile=True)
    dp = 40 // (cfg.parallel.tp * cfg.parallel.pp)
    return cfg, student, teacher, run_partition(cfg, teacher)[0], dp


def planned_bytes(cfg, student, teacher, layers, dp) -> dict:
    """The planner's stage-0 memory (`plan.memory.stage_memory`) and the part of it the slice holds:
    bf16 student weights and gradients (no optimizer, no fp32 accumulation buffer), teacher weights,
    the student's activations with ONE micro-batch in flight and the teacher's forward peak."""
    from megatron_glmd.model.activation_memory import student_activation_bytes
    from megatron_glmd.model.size import BYTES_BF16_GRAD, BYTES_BF16_WEIGHT
    from megatron_glmd.plan.memory import stage_memory
    full = stage_memory(cfg, teacher, layers, 0, dp, cfg.train.checkpoint_activations)
    activations = student_activation_bytes(
        student, cfg.data.seq_length, cfg.train.micro_batch_size, cfg.parallel.tp, cfg.parallel.pp, 0, 1,
        cfg.train.checkpoint_activations, teacher_hidden=teacher.hidden_size, layer_range=layers.student)
    return {"stage_total": full.total_bytes,
            "slice": (BYTES_BF16_WEIGHT + BYTES_BF16_GRAD) * full.student_params + full.teacher_weights
            + activations + full.teacher_activations,
            "student_params": full.student_params, "teacher_params": full.teacher_params}


def build_slice(student_cfg, teacher_cfg, layers, pp, device):
    from megatron_glmd.model import GLMStage
    from megatron_glmd.parallel.random import model_parallel_seed
    model_parallel_seed(1234)
    student = GLMStage(student_cfg, pp_rank=0, pp_size=pp, layer_range=layers.student, device=device)
    teacher = GLMStage(teacher_cfg, pp_rank=0, pp_size=pp, layer_range=layers.teacher, device=device)
    student.init_weights(1234).train()
    teacher.init_weights(4321).eval().requires_grad_(False)
    return student, teacher


def make_batch(vocab_size, seq, device, seed=0):
    """One GLM sample: Part A the first half (bidirectional), Part B the rest (causal), no padding."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (1, seq), generator=gen)
    sep = seq // 2
    positions = torch.cat([torch.arange(sep), torch.full((seq - sep,), sep)])
    blocks = torch.cat([torch.zeros(sep, dtype=torch.long), torch.arange(1, seq - sep + 1)])
    batch = (ids, torch.stack([positions, blocks])[None], torch.tensor([sep]), torch.tensor([seq]))
    return tuple(x.to(device) for x in batch)


def train_step(student, teacher, batch, grad_out):
    """Teacher forward (no_grad), student forward and backward; returns the teacher's output."""
    with torch.no_grad():
        teacher_out = teacher(*batch)
    student(*batch).backward(grad_out)
    return teacher_out


def kernel_summary(intervals, steps: int) -> dict:
    """From device events [(name, start_us, end_us)]: busy time (union of intervals) and kernel
    count per step, the attention kernels and whether a fused one ran, the top 12 kernels by time."""
    busy, end = 0.0, float("-inf")
    for _, a, b in sorted(intervals, key=lambda x: x[1]):
        busy += max(0.0, b - max(a, end))
        end = max(end, b)
    per_name = {}
    for name, a, b in intervals:
        per_name[name] = per_name.get(name, 0.0) + (b - a)
    attention = sorted(n for n in per_name if ATTENTION_LIKE.search(n))
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:12]
    return {"busy_us_per_step": busy / steps, "kernels_per_step": len(intervals) / steps,
            "attention_kernels": attention, "fused_attention": any(FUSED_ATTENTION.search(n) for n in attention),
            "top_kernels_us_per_step": {n: round(t / steps, 1) for n, t in top}}


def _device_intervals(prof):
    out = [(e.name, e.time_range.start, e.time_range.end) for e in prof.events()
           if e.device_type == torch.autograd.DeviceType.CUDA and not SYNC_EVENT.match(e.name)]
    if not out:
        raise RuntimeError("the profiler recorded no CUDA device events (CUPTI unavailable?)")
    return out


def run(args) -> dict:
    from torch.profiler import ProfilerActivity, profile
    try:
        cfg, student_cfg, teacher_cfg, layers, dp = slice_setup(args.mode == "compiled")
    except NotImplementedError as e:
        print(f"not run: {e}", flush=True)
        return {"status": "not run", "mode": args.mode, "note": str(e), "headline": {"note": str(e)}}
    device = torch.device("cuda")
    plan = planned_bytes(cfg, student_cfg, teacher_cfg, layers, dp)
    student, teacher = build_slice(student_cfg, teacher_cfg, layers, cfg.parallel.pp, device)
    seq = cfg.data.seq_length
    batch = make_batch(student_cfg.vocab_size, seq, device)
    grad_out = torch.randn(1, seq, student_cfg.hidden_size, device=device, dtype=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(2):   # warm-up: cuBLAS heuristics, the allocator and, compiled, torch.compile itself
        train_step(student, teacher, batch, grad_out)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    steps = args.steps
    start = time.perf_counter()
    for _ in range(steps):
        train_step(student, teacher, batch, grad_out)
    torch.cuda.synchronize()
    wall_us = (time.perf_counter() - start) / steps * 1e6
    peak = torch.cuda.max_memory_allocated()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            train_step(student, teacher, batch, grad_out)
        torch.cuda.synchronize()
    kernels = kernel_summary(_device_intervals(prof), steps)
    result = {"mode": args.mode, "student_layers": list(layers.student), "teacher_layers": list(layers.teacher),
              "seq_length": seq, "micro_batch": 1, "dtype": student_cfg.dtype,
              "recompute": student_cfg.checkpoint_activations, "warmup_s": round(warmup_s, 2),
              "step_ms": wall_us / 1e3, "gpu_busy_fraction": kernels["busy_us_per_step"] / wall_us,
              **kernels, "peak_allocated_gib": peak / 2 ** 30,
              "planned_slice_gib": plan["slice"] / 2 ** 30, "planned_stage_total_gib": plan["stage_total"] / 2 ** 30,
              "peak_over_planned_slice": peak / plan["slice"], "planner": plan}
    print(f"{args.mode}: {result['step_ms']:.1f} ms/step, GPU busy {100 * result['gpu_busy_fraction']:.0f}%, "
          f"{kernels['kernels_per_step']:.0f} kernels/step, fused attention {kernels['fused_attention']} "
          f"{kernels['attention_kernels']}, peak {result['peak_allocated_gib']:.2f} GiB against the planner's "
          f"{result['planned_slice_gib']:.2f} GiB for the slice ({result['planned_stage_total_gib']:.2f} GiB "
          f"for the whole stage)", flush=True)
    keys = ("step_ms", "gpu_busy_fraction", "kernels_per_step", "fused_attention", "peak_allocated_gib",
            "planned_slice_gib", "peak_over_planned_slice")
    return {"status": "ok", **result, "headline": {k: result[k] for k in keys}}


def _options(parser):
    parser.add_argument("--mode", choices=("eager", "compiled"), default="eager")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (and as many profiled)")


if __name__ == "__main__":
    from kernels.benchmarks.gpu_check_common import part_main
    sys.exit(part_main("stage", run, configure=_options))

"""The text glmd-launch-plan prints: one plan (``format_plan``) or a ranking (``format_ranking``)."""
from __future__ import annotations

import json
from typing import Optional, Tuple

from ..config import ModelConfig
from .build import LaunchPlan
from .memory import GiB
from .search import Ranking, layout_name, why_first


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _shape(c: ModelConfig) -> str:
    from ..model.size import total_parameter_count

    return (f"{c.num_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
            f"{_count(total_parameter_count(c))} params")


def _layers(r: Optional[Tuple[int, int]]) -> str:
    return "-" if r is None else f"{r[0]}-{r[1] - 1} ({r[1] - r[0]})"


def _gib(x: float) -> str:
    return f"{x / GiB:.2f}"


def format_plan(p: LaunchPlan, cpu: bool = False) -> str:
    lines = [
        f"student:     {_shape(p.student)}",
        f"teacher:     {_shape(p.teacher) if p.teacher else 'none (pretrain mode)'}",
        f"nodes:       {p.nodes} x {p.gpus_per_node} {'CPU processes' if cpu else 'GPUs'} = {p.world} ranks; "
        f"hosts {' '.join(p.hosts)}",
        f"layout:      TP={p.tp} PP={p.pp} DP={p.dp} (rank order pipe, data, model: TP fastest, "
        f"TP groups inside a node)",
        f"batch:       global {p.global_batch} = micro-batch {p.micro_batch} x accumulation {p.accumulation} "
        f"x DP {p.dp}; seq {p.seq_length}; {p.precision}; activation checkpointing "
        f"{'on' if p.checkpoint_activations else 'off'}",
        f"pipeline:    1F1B, {p.accumulation} micro-batches per step, bubble (p-1)/(m+p-1) = "
        f"{p.pp - 1}/{p.accumulation + p.pp - 1} = {100 * p.bubble:.1f}%",
        f"deepspeed:   {json.dumps(p.deepspeed)}",
        "",
        f"{'stage':>5}  {'ranks':>7}  {'nodes':<12} {'student layers':>14}  {'teacher layers':>14}",
    ]
    for s in p.stages:
        lines.append(f"{s.pp_rank:>5}  {f'{s.ranks[0]}-{s.ranks[1]}':>7}  {','.join(s.nodes):<12} "
                     f"{_layers(s.layers.student):>14}  {_layers(s.layers.teacher):>14}")
    lines += ["", *_flops_lines(p), "", *_memory_lines(p, cpu), *_cost_lines(p)]
    return "\n".join(lines)


def _flops_lines(p: LaunchPlan):
    recompute = " + recompute" if p.checkpoint_activations else ""
    timed = p.step is not None
    models = "teacher forward, both models' logits" if p.teacher else "the logits"
    lines = [f"FLOPs per token and stage (GFLOP; student forward + backward{recompute}, {models} on the last "
             "stage, layers balanced by model/partition.py)"
             + ("; time per micro-batch on one GPU (ms)" if timed else ""),
             f"{'stage':>5}  {'student':>8}  {'teacher':>8}  {'total':>8}  {'vs mean':>7}"
             + (f"  {'compute':>8}  {'TP comm':>8}  {'sends':>8}  {'total':>8}" if timed else "")]
    mean = sum(s.flops.total for s in p.stages) / p.pp
    for s in p.stages:
        row = (f"{s.pp_rank:>5}  {s.flops.student / 1e9:>8.3f}  {s.flops.teacher / 1e9:>8.3f}  "
               f"{s.flops.total / 1e9:>8.3f}  {100 * (s.flops.total / mean - 1):>+6.2f}%")
        if timed:
            t = s.time
            row += (f"  {1e3 * t.compute:>8.3f}  {1e3 * t.tp_comm:>8.3f}  {1e3 * t.p2p:>8.3f}  "
                    f"{1e3 * t.total:>8.3f}")
        lines.append(row)
    high, low = p.flops_spread
    lines.append(f"spread:      {100 * high:+.2f}% (max/mean - 1: the slowest stage's FLOPs over a perfect split of "
                 f"{mean / 1e9:.3f} GFLOP/token), min/mean - 1 = {100 * low:+.2f}%; the smallest maximum whole "
                 f"layers allow at PP={p.pp} (>= 1 layer of {'each model' if p.teacher else 'the model'} per stage)")
    return lines


def _memory_lines(p: LaunchPlan, cpu: bool):
    opt = "fp32 master+Adam /DP" if p.precision != "fp32" else "Adam moments /DP"
    lines = [
        f"memory per GPU (GiB): student weights+grads, {opt} (ZeRO-1), teacher weights, student activations "
        f"(1F1B, {'per-layer checkpoints' if p.checkpoint_activations else 'no checkpointing'}), teacher "
        "transient forward",
        f"{'stage':>5}  {'student params':>14}  {'teacher params':>14}  {'s.w+g':>6}  {'optim':>6}  {'t.w':>6}  "
        f"{'s.act':>6}  {'t.act':>6}  {'total':>6}",
    ]
    for s in p.stages:
        m = s.memory
        lines.append(f"{s.pp_rank:>5}  {m.student_params:>14,}  {m.teacher_params:>14,}  "
                     f"{_gib(m.student_weights_grads):>6}  {_gib(m.optimizer):>6}  {_gib(m.teacher_weights):>6}  "
                     f"{_gib(m.student_activations):>6}  {_gib(m.teacher_activations):>6}  {_gib(m.total_bytes):>6}")
    peak, hw = p.peak_stage, p.hardware
    if hw.gpu_memory_gib > 0:
        verdict = "fits" if p.fits else "DOES NOT FIT"
        lines.append(f"peak per GPU: {_gib(peak.memory.total_bytes)} GiB (stage {peak.pp_rank}) + {hw.reserve_gib:.2f} "
                     f"GiB reserve (CUDA context, NCCL, DeepSpeed buckets, fragmentation) = {p.needed_gib:.2f} GiB "
                     f"of {hw.gpu_memory_gib:g} GiB: {verdict} {hw.gpu_name}")
    else:
        lines.append(f"peak per {'rank' if cpu else 'GPU'}: {_gib(peak.memory.total_bytes)} GiB "
                     f"(stage {peak.pp_rank}); no memory budget checked")
    return lines


def _cost_lines(p: LaunchPlan):
    lines = [f"flops:       {p.tokens:.3e} tokens; {p.model_flops_per_token / 1e9:.4g} GFLOP/token model (student "
             f"forward + backward, teacher forward), {p.hardware_flops_per_token / 1e9:.4g} GFLOP/token hardware "
             f"(+ recompute, vocabulary padded for TP={p.tp})"]
    if p.step is None:
        return lines + ["time:        not modelled (CPU processes, or --peak-tflops 0)"]
    st, hw = p.step, p.hardware
    parts = ", ".join(f"{name} {1e3 * v:.1f}" for name, v in st.parts().items())
    slots, slowest = st.micro_batches + st.pp - 1, st.stages[st.slowest].total
    lines += [
        f"step:        (m + p - 1) x slowest stage = {slots} x {1e3 * slowest:.3f} ms (stage {st.slowest}) "
        f"+ embedding tie {1e3 * st.tie_comm:.1f} ms + DP reduce {1e3 * st.dp_comm:.1f} ms = {st.total:.3f} s; "
        f"parts (ms): {parts}",
        f"time:        {p.iterations} steps x {st.total:.3f} s = {p.hours:.1f} h ({p.hours * p.world:.0f} GPU-hours); "
        f"MFU {100 * p.mfu:.1f}%, HFU {100 * p.hfu:.1f}% of {hw.peak_tflops:g} TFLOP/s x {p.world} GPUs",
        f"assumed:     {hw.matmul_efficiency:g} of peak sustained in compute; NVLink {hw.nvlink_gbps:g} GB/s, "
        f"InfiniBand {hw.ib_gbps:g} GB/s per GPU, {hw.comm_latency_us:g} us per transfer (see --help)",
    ]
    return lines


def format_ranking(r: Ranking, nodes: int, gpus_per_node: int, top: int = 5,
                   configured: Optional[Tuple[int, int, int]] = None) -> str:
    """The ``top`` fastest layouts, why the first beats the second, and where ``configured``
    (the run config's TP, PP, micro-batch) ranks."""
    world = nodes * gpus_per_node
    hw = r.plans[0].hardware
    budget = f"fit {hw.gpu_memory_gib:g} GiB" if hw.gpu_memory_gib > 0 else "(no memory budget)"
    lines = [f"ranking:     {len(r.plans)} layouts of {world} GPUs ({nodes} x {gpus_per_node}) pass every check "
             f"and {budget}; {len(r.over_memory)} more do not fit, {len(r.refused)} candidates "
             "refused; fastest modelled step first",
             f"{'rank':>4}  {'layout':<22} {'bubble':>6}  {'spread':>6}  {'step s':>7}  {'hours':>6}  {'MFU':>5}  "
             f"{'HFU':>5}  {'peak GiB':>8}"]
    for i, p in enumerate(r.plans[:top], 1):
        lines.append(f"{i:>4}  {layout_name(p):<22} {100 * p.bubble:>5.1f}%  {100 * p.flops_spread[0]:>+5.1f}%  "
                     f"{p.step.total:>7.3f}  {p.hours:>6.1f}  {100 * p.mfu:>4.1f}%  {100 * p.hfu:>4.1f}%  "
                     f"{p.needed_gib:>8.2f}")
    if len(r.plans) > 1:
        lines.append(f"why:         {why_first(r.plans[0], r.plans[1])}")
    if configured is not None:
        found = [i for i, p in enumerate(r.plans) if (p.tp, p.pp, p.micro_batch) == configured]
        tp, pp, mb = configured
        if not found:
            lines.append(f"config:      the run config's TP={tp} PP={pp} mb={mb} is not among them")
        elif found[0] == 0:
            lines.append("config:      the run config's layout ranks first")
        else:
            lines.append(f"config:      the run config's {layout_name(r.plans[found[0]])} ranks {found[0] + 1}: "
                         f"{why_first(r.plans[0], r.plans[found[0]])}")
    return "\n".join(lines)

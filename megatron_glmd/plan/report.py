"""The text glmd-launch-plan prints: one plan (``format_plan``) or a ranking (``format_ranking``)."""
from __future__ import annotations

import json
from typing import Optional, Tuple

from ..config import ModelConfig
from .build import LaunchPlan
from .deepspeed_state import optimizer_state
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
        f"x DP {p.dp}; seq {p.seq_length}; {p.precision}",
        f"checkpoint:  {p.checkpointing.describe()}",
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
             + (f"  {'compute':>8}  {'TP comm':>8}  {'launch':>8}  {'sends':>8}  {'total':>8}" if timed else "")]
    mean = sum(s.flops.total for s in p.stages) / p.pp
    for s in p.stages:
        row = (f"{s.pp_rank:>5}  {s.flops.student / 1e9:>8.3f}  {s.flops.teacher / 1e9:>8.3f}  "
               f"{s.flops.total / 1e9:>8.3f}  {100 * (s.flops.total / mean - 1):>+6.2f}%")
        if timed:
            t = s.time
            row += (f"  {1e3 * t.compute:>8.3f}  {1e3 * t.tp_comm:>8.3f}  {1e3 * t.launch:>8.3f}  "
                    f"{1e3 * t.p2p:>8.3f}  {1e3 * t.total:>8.3f}" + ("  launch-bound" if t.launch_bound else ""))
        lines.append(row)
    high, low = p.flops_spread
    lines.append(f"spread:      {100 * high:+.2f}% (max/mean - 1: the slowest stage's FLOPs over a perfect split of "
                 f"{mean / 1e9:.3f} GFLOP/token), min/mean - 1 = {100 * low:+.2f}%; the smallest maximum whole "
                 f"layers allow at PP={p.pp} (>= 1 layer of {'each model' if p.teacher else 'the model'} per stage)")
    return lines


def _memory_lines(p: LaunchPlan, cpu: bool):
    state = optimizer_state(p.precision)
    wg = "bf16 weights+grads, fp32 grad accumulator" if p.precision == "bf16" else f"{p.precision} weights+grads"
    lines = [
        f"memory per GPU (GiB), DeepSpeed {state.optimizer} (plan/deepspeed_state.py): student {wg} "
        f"({state.weights_grads} B/param), stage 1 gradient bucket, fp32 master+Adam /DP (ZeRO-1), teacher "
        f"weights, student activations (1F1B, {'per-layer checkpoints' if p.checkpoint_activations else 'no checkpointing'}), "
        "teacher transient forward, DP reduction transient (fp32 flatten or buckets); "
        "total = state + max(activations, DP transient)",
        f"{'stage':>5}  {'student params':>14}  {'teacher params':>14}  {'s.w+g':>6}  {'bucket':>6}  {'optim':>6}  "
        f"{'t.w':>6}  {'s.act':>6}  {'t.act':>6}  {'DP tr.':>6}  {'total':>6}",
    ]
    for s in p.stages:
        m = s.memory
        lines.append(f"{s.pp_rank:>5}  {m.student_params:>14,}  {m.teacher_params:>14,}  "
                     f"{_gib(m.student_weights_grads):>6}  {_gib(m.grad_bucket):>6}  {_gib(m.optimizer):>6}  "
                     f"{_gib(m.teacher_weights):>6}  {_gib(m.student_activations):>6}  "
                     f"{_gib(m.teacher_activations):>6}  {_gib(m.dp_transient):>6}  {_gib(m.total_bytes):>6}")
    peak, hw = p.peak_stage, p.hardware
    if hw.gpu_memory_gib > 0:
        verdict = "fits" if p.fits else "DOES NOT FIT"
        lines.append(f"peak per GPU: {_gib(peak.memory.total_bytes)} GiB (stage {peak.pp_rank}) + {hw.reserve_gib:.2f} "
                     f"GiB reserve (CUDA context, NCCL, fragmentation) = {p.needed_gib:.2f} GiB "
                     f"of {hw.gpu_memory_gib:g} GiB: {verdict} {hw.gpu_name}")
    else:
        lines.append(f"peak per {'rank' if cpu else 'GPU'}: {_gib(peak.memory.total_bytes)} GiB "
                     f"(stage {peak.pp_rank}); no memory budget checked")
    return lines


def _cost_lines(p: LaunchPlan):
    lines = [f"flops:       {p.tokens:.3e} tokens; {p.model_flops_per_token / 1e9:.4g} GFLOP/token model (student "
             f"forward + backward, teacher forward), {p.hardware_flops_per_token / 1e9:.4g} GFLOP/token hardware "
             f"({'+ recompute, ' if p.checkpoint_activations else ''}vocabulary padded for TP={p.tp})"]
    if p.step is None:
        return lines + ["time:        not modelled (CPU processes, or --peak-tflops 0)"]
    st, hw = p.step, p.hardware
    parts = ", ".join(f"{name} {1e3 * v:.1f}" for name, v in st.parts().items())
    slots, slowest = st.micro_batches + st.pp - 1, st.stages[st.slowest].total
    lines += [
        f"step:        (m + p - 1) x slowest stage = {slots} x {1e3 * slowest:.3f} ms (stage {st.slowest}) "
        f"+ embedding tie {1e3 * st.tie_comm:.1f} ms + DP reduce {1e3 * st.dp_comm:.1f} ms = {st.total:.3f} s; "
        f"parts (ms): {parts}",
        f"launches:    {_launch_verdict(p)}",
        f"time:        {p.iterations} steps x {st.total:.3f} s = {p.hours:.1f} h ({p.hours * p.world:.0f} GPU-hours); "
        f"MFU {100 * p.mfu:.1f}%, HFU {100 * p.hfu:.1f}% of {hw.peak_tflops:g} TFLOP/s x {p.world} GPUs",
        f"assumed:     {hw.matmul_efficiency:g} of peak sustained in compute; NVLink {hw.nvlink_gbps:g} GB/s, "
        f"InfiniBand {hw.ib_gbps:g} GB/s per GPU, {hw.comm_latency_us:g} us per transfer, {hw.launch_us:g} us per "
        "kernel launch (see --help)",
    ]
    return lines


def _launch_verdict(p: LaunchPlan) -> str:
    bound = p.launch_bound_stages
    if p.hardware.launch_us <= 0:
        return "host launch time not modelled (--launch-us 0)"
    if not bound:
        return "no stage is launch-bound (host launch time < GPU time per micro-batch on every stage)"
    st = p.step.stages[p.step.slowest]
    return (f"stage(s) {', '.join(map(str, bound))} launch-bound: the host issues their kernels slower than the GPU "
            f"runs them (slowest stage: {1e3 * st.launch:.3f} ms of launches against {1e3 * st.gpu:.3f} ms on the GPU)")


def format_ranking(r: Ranking, nodes: int, gpus_per_node: int, top: int = 5,
                   configured: Optional[Tuple[int, int, int, object]] = None) -> str:
    """The ``top`` fastest plans (layout x activation checkpointing), why the first beats the second,
    and where ``configured`` (the run config's TP, PP, micro-batch, checkpoint_activations) ranks."""
    world = nodes * gpus_per_node
    hw = r.plans[0].hardware
    budget = f"fit {hw.gpu_memory_gib:g} GiB" if hw.gpu_memory_gib > 0 else "(no memory budget)"
    lines = [f"ranking:     {len(r.plans)} plans (layout x activation checkpointing off/on) of {world} GPUs "
             f"({nodes} x {gpus_per_node}) pass every check and {budget}; {len(r.over_memory)} more do not fit, "
             f"{len(r.refused)} layouts refused; fastest modelled step first; auto: checkpointing auto's choice "
             "for the layout; launch: stages launch-bound",
             f"{'rank':>4}  {'layout':<31} {'auto':>4}  {'bubble':>6}  {'spread':>6}  {'step s':>7}  {'hours':>6}  "
             f"{'MFU':>5}  {'HFU':>5}  {'peak GiB':>8}  {'launch':>6}"]
    for i, p in enumerate(r.plans[:top], 1):
        bound = len(p.launch_bound_stages)
        lines.append(f"{i:>4}  {layout_name(p):<31} {'*' if r.is_auto_choice(p) else '':>4}  {100 * p.bubble:>5.1f}%  "
                     f"{100 * p.flops_spread[0]:>+5.1f}%  {p.step.total:>7.3f}  {p.hours:>6.1f}  {100 * p.mfu:>4.1f}%  "
                     f"{100 * p.hfu:>4.1f}%  {p.needed_gib:>8.2f}  {f'{bound}/{p.pp}':>6}")
    if len(r.plans) > 1:
        lines.append(f"why:         {why_first(r.plans[0], r.plans[1])}")
    if configured is not None:
        lines.append(_configured_line(r, configured))
    return "\n".join(lines)


def _configured_line(r: Ranking, configured) -> str:
    tp, pp, mb, checkpoint = configured
    wanted = r.auto.get((tp, pp, mb)) if checkpoint == "auto" else checkpoint
    found = [i for i, p in enumerate(r.plans)
             if (p.tp, p.pp, p.micro_batch, p.checkpoint_activations) == (tp, pp, mb, wanted)]
    how = f"checkpoint_activations: {str(checkpoint).lower()}"
    if not found:
        return f"config:      the run config's TP={tp} PP={pp} mb={mb} ({how}) is not among them"
    name = f"{layout_name(r.plans[found[0]])} ({how})"
    if found[0] == 0:
        return f"config:      the run config's {name} ranks first"
    return f"config:      the run config's {name} ranks {found[0] + 1}: {why_first(r.plans[0], r.plans[found[0]])}"

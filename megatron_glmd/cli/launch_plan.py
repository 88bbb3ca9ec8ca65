"""glmd-launch-plan: check a run's parallel layout and print its memory and cost plan; starts nothing.

    glmd-launch-plan --config launch/configs/distill_10b_2b.yaml --nodes 5 --gpus-per-node 8 \\
        --teacher-model glm-10b [--set section.key=value ...]

Prints the layout (nodes, ranks, TP/PP/DP, batch, accumulation, per-stage layer ranges of student
and teacher), per-GPU memory per stage (student bf16 weights + grads, ZeRO-1 fp32 master + Adam
sharded over DP, teacher bf16 weights, student activations under 1F1B, the teacher's transient
forward activations, see :mod:`megatron_glmd.model.activation_memory`), whether the peak fits the
GPU, and the modelled cost. A layout that cannot run prints one ``error: ...`` line and exits 2.
The launch scripts in ``launch/`` call it before starting anything.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from ..config import ModelConfig

# Only the standard library at import time: ``--expand-nodelist`` (used by the Slurm script) must
# not pay for importing torch. The model and config modules are imported where they are used.
GiB = 1024 ** 3
BYTES_FP32 = 4
FP32_ADAM_STATES = 8  # fp32 training: the weights are the master copy, Adam adds two moments


class PlanError(ValueError):
    """The layout cannot run (or does not fit); the message names the value."""


# ---------------------------------------------------------------------------------------- hosts
def expand_nodelist(nodelist: str) -> List[str]:
    """Expand a Slurm hostlist (``gpu[01-03,07],login1``, ``r[1-2]n[1-2]``) like ``scontrol show hostnames``."""
    items, depth, current = [], 0, ""
    for ch in nodelist.strip():
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    hosts: List[str] = []
    for item in items:
        if not item or depth != 0:
            raise PlanError(f"cannot parse Slurm node list {nodelist!r}")
        parts = re.split(r"(\[[^\]]*\])", item)
        choices = [_expand_brackets(p, nodelist) if p.startswith("[") else [p] for p in parts]
        hosts.extend("".join(c) for c in itertools.product(*choices))
    return hosts


def _expand_brackets(group: str, nodelist: str) -> List[str]:
    out = []
    for rng in group[1:-1].split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", rng)
        if not m:
            raise PlanError(f"cannot parse range {rng!r} in Slurm node list {nodelist!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        out.extend(str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1))
    return out


# ---------------------------------------------------------------------------------------- plan
@dataclass
class StagePlan:
    pp_rank: int
    ranks: Tuple[int, int]               # inclusive
    nodes: List[str]
    student_layers: Tuple[int, int]      # [start, end)
    teacher_layers: Optional[Tuple[int, int]]
    student_params: int                  # per GPU (one TP rank)
    teacher_params: int
    student_weights_grads: int           # bytes per GPU
    optimizer: int
    teacher_weights: int
    student_activations: float
    teacher_activations: float

    @property
    def total_bytes(self) -> float:
        return (self.student_weights_grads + self.optimizer + self.teacher_weights + self.student_activations
                + self.teacher_activations)


@dataclass
class LaunchPlan:
    nodes: int
    gpus_per_node: int
    hosts: List[str]
    tp: int
    pp: int
    dp: int
    global_batch: int
    micro_batch: int
    accumulation: int
    seq_length: int
    precision: str
    checkpoint_activations: bool
    student: ModelConfig
    teacher: Optional[ModelConfig]
    stages: List[StagePlan]
    deepspeed: dict                   # the configuration the trainer passes to deepspeed.initialize
    gpu_memory_gib: float
    reserve_gib: float
    tokens: int
    flops_per_token: float
    peak_tflops: float
    mfu: float

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def bubble(self) -> float:
        """Idle fraction of a 1F1B step: (p − 1) / (m + p − 1)."""
        return (self.pp - 1) / (self.accumulation + self.pp - 1)

    @property
    def peak_stage(self) -> StagePlan:
        return max(self.stages, key=lambda s: s.total_bytes)

    @property
    def needed_gib(self) -> float:
        return self.peak_stage.total_bytes / GiB + self.reserve_gib

    @property
    def fits(self) -> bool:
        return self.gpu_memory_gib <= 0 or self.needed_gib <= self.gpu_memory_gib

    @property
    def total_flops(self) -> float:
        return self.tokens * self.flops_per_token

    @property
    def hours(self) -> Optional[float]:
        if self.peak_tflops <= 0 or self.mfu <= 0:
            return None
        return self.total_flops / (self.world * self.peak_tflops * 1e12 * self.mfu) / 3600


def resolve_teacher(cfg, teacher_model: Optional[str]) -> Optional[ModelConfig]:
    """The teacher's shape: from the teacher checkpoint's saved config when it exists (what the trainer
    loads), else from ``teacher_model`` (a preset name or a model YAML); both given must agree."""
    if cfg.mode != "distill":
        return None
    from ..config import PRESETS, load_config, preset
    from ..config import load_run_config

    saved_path = os.path.join(cfg.teacher_checkpoint or "", "config.yaml")
    from_ckpt = load_run_config(saved_path).model if cfg.teacher_checkpoint and os.path.exists(saved_path) else None
    from_flag = None
    if teacher_model:
        from_flag = preset(teacher_model) if teacher_model in PRESETS else load_config(teacher_model)
    if from_ckpt is not None and from_flag is not None:
        for name in ("num_layers", "hidden_size", "num_attention_heads", "vocab_size", "ffn_size"):
            if getattr(from_ckpt, name) != getattr(from_flag, name):
                raise PlanError(f"{saved_path}: teacher {name}={getattr(from_ckpt, name)}, but --teacher-model "
                                f"{teacher_model} has {name}={getattr(from_flag, name)}")
    teacher = from_ckpt or from_flag
    if teacher is None:
        raise PlanError(f"the teacher's shape is unknown: {saved_path} does not exist; "
                        "pass --teacher-model PRESET|MODEL.yaml")
    return teacher


def check_layout(cfg, nodes: int, gpus_per_node: int) -> int:
    """Layout checks that need the hardware; returns DP. Then the run config's own validation."""
    from ..config import ConfigError

    tp, pp = cfg.parallel.tp, cfg.parallel.pp
    if nodes < 1 or gpus_per_node < 1:
        raise PlanError(f"need at least one node and one GPU per node, got nodes={nodes}, "
                        f"gpus_per_node={gpus_per_node}")
    world = nodes * gpus_per_node
    if tp > gpus_per_node:
        raise PlanError(f"parallel.tp={tp} exceeds the {gpus_per_node} GPUs of a node: "
                        "tensor-parallel groups must stay inside a node")
    if gpus_per_node % tp:
        raise PlanError(f"{gpus_per_node} GPUs per node is not a multiple of parallel.tp={tp}: "
                        "a tensor-parallel group would straddle two nodes")
    if world % (tp * pp):
        raise PlanError(f"world size {world} ({nodes} nodes x {gpus_per_node} GPUs) is not divisible by "
                        f"parallel.tp x parallel.pp = {tp} x {pp} = {tp * pp}")
    # The trainer's own checks (heads, batch divisibility, ...); the teacher checkpoint is the
    # trainer's to check on the cluster, so a dry run works anywhere.
    try:
        dataclasses.replace(cfg, mode="pretrain", teacher_checkpoint=None).validate(world)
    except ConfigError as e:
        raise PlanError(str(e)) from None
    return world // (tp * pp)


def build_plan(cfg, *, nodes: int, gpus_per_node: int, teacher: Optional[ModelConfig] = None,
               hosts: Optional[Sequence[str]] = None, gpu_memory_gib: float = 40.0, reserve_gib: float = 4.0,
               peak_tflops: float = 312.0, mfu: float = 0.45) -> LaunchPlan:
    """Check the layout and estimate per-stage, per-GPU memory and the run's cost; raises PlanError.

    Model state follows :func:`~megatron_glmd.model.size.training_memory` (16-bit weights and grads,
    fp32 master + Adam over DP); in fp32 runs the weights are their own master copy.
    """
    from ..config import ConfigError
    from ..model.flops import training_flops_per_token
    from ..distill.engine import deepspeed_config
    from ..model.activation_memory import student_activation_bytes, teacher_forward_bytes
    from ..model.glm import stage_layer_range
    from ..model.size import stage_parameter_count, training_memory

    dp = check_layout(cfg, nodes, gpus_per_node)
    tp, pp, t = cfg.parallel.tp, cfg.parallel.pp, cfg.train
    student = cfg.model
    if teacher is not None:
        try:
            teacher.validate(tp_size=tp, pp_size=pp)
        except ConfigError as e:
            raise PlanError(f"teacher model: {e}") from None
        if teacher.vocab_size != student.vocab_size:
            raise PlanError(f"teacher vocab_size={teacher.vocab_size}, student model.vocab_size="
                            f"{student.vocab_size}: teacher and student must share the vocabulary")
    hosts = list(hosts) if hosts else [f"node{i}" for i in range(nodes)]
    if len(hosts) != nodes:
        raise PlanError(f"the node list names {len(hosts)} hosts, but nodes={nodes}")
    accumulation = t.global_batch_size // (t.micro_batch_size * dp)
    sixteen_bit = t.precision in ("bf16", "fp16")
    act_scale = 1 if sixteen_bit else 2    # the activation formulas count 16-bit values
    seq, mb = cfg.data.seq_length, t.micro_batch_size
    zero1 = training_memory(student, tp, pp, dp) if sixteen_bit else None
    stages = []
    for k in range(pp):
        n = stage_parameter_count(student, tp, pp, k)
        if sixteen_bit:
            weights_grads, optimizer = zero1[k].weights_bytes + zero1[k].grads_bytes, zero1[k].optimizer_bytes
            if t.precision == "bf16":  # the trainer accumulates bf16 gradients in fp32 (grad_accum_dtype)
                weights_grads += (BYTES_FP32 - 2) * n
        else:
            weights_grads, optimizer = 2 * BYTES_FP32 * n, -(-FP32_ADAM_STATES * n // dp)
        n_teacher = stage_parameter_count(teacher, tp, pp, k) if teacher is not None else 0
        first_rank = k * dp * tp
        last_rank = first_rank + dp * tp - 1
        stages.append(StagePlan(
            pp_rank=k, ranks=(first_rank, last_rank),
            nodes=[hosts[r] for r in sorted({r // gpus_per_node for r in range(first_rank, last_rank + 1)})],
            student_layers=stage_layer_range(student.num_layers, pp, k),
            teacher_layers=stage_layer_range(teacher.num_layers, pp, k) if teacher is not None else None,
            student_params=n, teacher_params=n_teacher, student_weights_grads=weights_grads,
            optimizer=optimizer, teacher_weights=n_teacher * (2 if sixteen_bit else BYTES_FP32),
            student_activations=act_scale * student_activation_bytes(
                student, seq, mb, tp, pp, k, accumulation, t.checkpoint_activations,
                teacher_hidden=teacher.hidden_size if teacher is not None else None),
            teacher_activations=act_scale * teacher_forward_bytes(teacher, seq, mb, tp, k == pp - 1)
            if teacher is not None else 0.0))
    return LaunchPlan(
        nodes=nodes, gpus_per_node=gpus_per_node, hosts=hosts, tp=tp, pp=pp, dp=dp,
        global_batch=t.global_batch_size, micro_batch=mb, accumulation=accumulation, seq_length=seq,
        precision=t.precision, checkpoint_activations=t.checkpoint_activations, student=student,
        teacher=teacher, stages=stages, deepspeed=deepspeed_config(cfg, dp),
        gpu_memory_gib=gpu_memory_gib, reserve_gib=reserve_gib,
        tokens=t.iterations * t.global_batch_size * seq,
        flops_per_token=training_flops_per_token(student, teacher, seq, t.checkpoint_activations),
        peak_tflops=peak_tflops, mfu=mfu)


# ---------------------------------------------------------------------------------------- report
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


def format_plan(plan: LaunchPlan, gpu_name: str = "A100-40GB", cpu: bool = False) -> str:
    p = plan
    gib = lambda x: f"{x / GiB:.2f}"  # noqa: E731
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
                     f"{_layers(s.student_layers):>14}  {_layers(s.teacher_layers):>14}")
    opt = "fp32 master+Adam /DP" if p.precision != "fp32" else "Adam moments /DP"
    lines += [
        "",
        f"memory per GPU (GiB): student weights+grads, {opt} (ZeRO-1), teacher weights, student activations "
        f"(1F1B, {'per-layer checkpoints' if p.checkpoint_activations else 'no checkpointing'}), teacher "
        "transient forward",
        f"{'stage':>5}  {'student params':>14}  {'teacher params':>14}  {'s.w+g':>6}  {'optim':>6}  {'t.w':>6}  "
        f"{'s.act':>6}  {'t.act':>6}  {'total':>6}",
    ]
    for s in p.stages:
        lines.append(f"{s.pp_rank:>5}  {s.student_params:>14,}  {s.teacher_params:>14,}  "
                     f"{gib(s.student_weights_grads):>6}  {gib(s.optimizer):>6}  {gib(s.teacher_weights):>6}  "
                     f"{gib(s.student_activations):>6}  {gib(s.teacher_activations):>6}  {gib(s.total_bytes):>6}")
    peak = p.peak_stage
    if p.gpu_memory_gib > 0:
        verdict = "fits" if p.fits else "DOES NOT FIT"
        lines.append(f"peak per GPU: {gib(peak.total_bytes)} GiB (stage {peak.pp_rank}) + {p.reserve_gib:.2f} GiB "
                     f"reserve (CUDA context, NCCL, DeepSpeed buckets, fragmentation) = {p.needed_gib:.2f} GiB "
                     f"of {p.gpu_memory_gib:g} GiB: {verdict} {gpu_name}")
    else:
        lines.append(f"peak per {'rank' if cpu else 'GPU'}: {gib(peak.total_bytes)} GiB (stage {peak.pp_rank}); "
                     "no memory budget checked")
    cost = (f"cost:        {p.tokens:.3e} tokens x {p.flops_per_token / 1e9:.4g} GFLOP/token = "
            f"{p.total_flops:.3e} FLOP")
    if p.hours is not None:
        cost += (f"; at {100 * p.mfu:.0f}% of {p.peak_tflops:g} TFLOP/s x {p.world} GPUs: {p.hours:.1f} h "
                 f"({p.hours * p.world:.0f} GPU-hours)")
    lines.append(cost)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glmd-launch-plan", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="run configuration YAML (as for glmd-train)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable), as glmd-train does")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs (ranks) per node (default 8)")
    p.add_argument("--nodelist", help="Slurm node list, e.g. gpu[01-05]; names the hosts of each stage")
    p.add_argument("--teacher-model", help="teacher shape (preset or model YAML) when the teacher checkpoint "
                                           "is not readable here; checked against it when it is")
    p.add_argument("--gpu-memory-gib", type=float, default=40.0, help="memory per GPU; 0 skips the check")
    p.add_argument("--cpu", action="store_true",
                   help="ranks are CPU processes: no memory budget, no GPU-hours (implies --gpu-memory-gib 0)")
    p.add_argument("--gpu-name", default="A100-40GB", help="printed next to the verdict")
    p.add_argument("--reserve-gib", type=float, default=4.0,
                   help="kept free for CUDA context, NCCL, DeepSpeed buckets, fragmentation (default 4)")
    p.add_argument("--peak-tflops", type=float, default=312.0, help="dense bf16 peak per GPU (A100: 312)")
    p.add_argument("--mfu", type=float, default=0.45, help="assumed model-FLOPs utilisation (default 0.45)")
    p.add_argument("--expand-nodelist", metavar="NODELIST",
                   help="only print the hosts of a Slurm node list, one per line, and exit")
    return p


def _report_error(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.expand_nodelist is not None:
        try:
            print("\n".join(expand_nodelist(args.expand_nodelist)))
        except PlanError as e:
            return _report_error(e)
        return 0
    if not args.config:
        parser.error("--config is required (or --expand-nodelist)")
    from ..config import ConfigError
    from ..config import load_run_config

    try:
        cfg = load_run_config(args.config, args.set)
        hosts = expand_nodelist(args.nodelist) if args.nodelist else None
        check_layout(cfg, args.nodes, args.gpus_per_node)   # layout errors before the teacher's
        plan = build_plan(cfg, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                          teacher=resolve_teacher(cfg, args.teacher_model), hosts=hosts,
                          gpu_memory_gib=0.0 if args.cpu else args.gpu_memory_gib, reserve_gib=args.reserve_gib,
                          peak_tflops=0.0 if args.cpu else args.peak_tflops, mfu=args.mfu)
    except (ConfigError, PlanError) as e:
        return _report_error(e)
    print(format_plan(plan, args.gpu_name, cpu=args.cpu), flush=True)
    if not plan.fits:
        peak = plan.peak_stage
        return _report_error(PlanError(
            f"memory over budget: stage {peak.pp_rank} needs {peak.total_bytes / GiB:.2f} GiB per GPU + "
            f"{plan.reserve_gib:.2f} GiB reserve = {plan.needed_gib:.2f} GiB > {plan.gpu_memory_gib:g} GiB "
            "(--gpu-memory-gib)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

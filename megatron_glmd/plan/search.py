"""Every feasible layout of a GPU count, ranked by modelled step time (then peak memory).

Candidates: TP a divisor of the GPUs per node (TP groups stay inside a node) that divides both
models' heads, hidden and MLP widths; PP a divisor of world / TP no larger than either model's
layer count; DP = world / (TP·PP) dividing the global batch; every micro-batch size dividing
global batch / DP; each with per-layer activation checkpointing off and on. A candidate is kept
when it passes every check of a single plan (the same :func:`~.build.build_plan`) and fits the
GPU's memory. ``train.checkpoint_activations: auto`` picks, per layout, the variant without
checkpointing when it fits (:mod:`.checkpointing`): the ranking shows both, marks auto's pick.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import ModelConfig, ParallelConfig, RunConfig
from . import PlanError
from .build import LaunchPlan, build_plan
from .hardware import Hardware


def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def with_layout(cfg: RunConfig, tp: int, pp: int, micro_batch: int, checkpoint=None) -> RunConfig:
    """``cfg`` at another layout; ``checkpoint`` (True, False, "auto") replaces train.checkpoint_activations."""
    train = dataclasses.replace(cfg.train, micro_batch_size=micro_batch)
    if checkpoint is not None:
        train = dataclasses.replace(train, checkpoint_activations=checkpoint)
    return dataclasses.replace(cfg, parallel=ParallelConfig(tp=tp, pp=pp), train=train)


@dataclass
class Ranking:
    plans: List[LaunchPlan]                                       # fastest first
    refused: List[Tuple[str, str]] = field(default_factory=list)  # (layout, the check it failed)
    over_memory: List[LaunchPlan] = field(default_factory=list)
    auto: Dict[Tuple[int, int, int], bool] = field(default_factory=dict)  # (TP, PP, mb) -> auto's checkpointing

    def is_auto_choice(self, p: LaunchPlan) -> bool:
        return self.auto.get((p.tp, p.pp, p.micro_batch)) == p.checkpoint_activations


def rank_layouts(cfg: RunConfig, *, nodes: int, gpus_per_node: int, teacher: Optional[ModelConfig],
                 hosts: Optional[Sequence[str]] = None, hardware: Hardware = Hardware()) -> Ranking:
    if hardware.peak_tflops <= 0:
        raise PlanError("ranking needs the time model: --peak-tflops must be > 0 (and not --cpu)")
    world = nodes * gpus_per_node
    ranking = Ranking(plans=[])
    for tp in _divisors(gpus_per_node):
        for pp in _divisors(world // tp) if world % tp == 0 else []:
            dp = world // (tp * pp)
            batches = _divisors(cfg.train.global_batch_size // dp) if cfg.train.global_batch_size % dp == 0 else [1]
            for mb in batches:
                for checkpoint in (False, True):
                    try:
                        plan = build_plan(with_layout(cfg, tp, pp, mb, checkpoint), nodes=nodes,
                                          gpus_per_node=gpus_per_node, teacher=teacher, hosts=hosts, hardware=hardware)
                    except PlanError as e:
                        if not checkpoint:   # the same checks refuse both variants
                            ranking.refused.append((f"TP={tp} PP={pp} DP={dp} mb={mb}", str(e)))
                        continue
                    (ranking.plans if plan.fits else ranking.over_memory).append(plan)
                    if not checkpoint:       # auto: off where the layout fits without it (checkpointing.py)
                        ranking.auto[(tp, pp, mb)] = plan.checkpointing.auto_enabled
    ranking.plans.sort(key=lambda p: (p.step.total, p.needed_gib, p.tp, p.pp, p.micro_batch, p.checkpoint_activations))
    return ranking


def layout_name(p: LaunchPlan) -> str:
    return f"TP={p.tp} PP={p.pp} DP={p.dp} mb={p.micro_batch} ckpt={'on' if p.checkpoint_activations else 'off'}"


def why_first(a: LaunchPlan, b: LaunchPlan, parts: int = 3) -> str:
    """One line: by how much ``a`` beats ``b`` and which parts of the step make the difference."""
    gap = b.step.total - a.step.total
    if gap <= 1e-12:
        return (f"{layout_name(a)} ties {layout_name(b)} on modelled time ({1e3 * a.step.total:.1f} ms/step) "
                f"and needs less memory ({a.needed_gib:.2f} vs {b.needed_gib:.2f} GiB)")
    pa, pb = a.step.parts(), b.step.parts()
    deltas: List[Tuple[str, float]] = sorted(((name, pa[name] - pb[name]) for name in pa),
                                             key=lambda x: -abs(x[1]))
    shown = ", ".join(f"{name} {1e3 * d:+.1f} ms" for name, d in deltas[:parts] if abs(d) >= 5e-5)
    return (f"{layout_name(a)} beats {layout_name(b)} by {1e3 * gap:.1f} ms/step "
            f"({100 * gap / b.step.total:.1f}%): {shown}")

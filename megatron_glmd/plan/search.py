"""Every feasible layout of a GPU count, ranked by modelled step time (then peak memory).

Candidates: TP a divisor of the GPUs per node (TP groups stay inside a node) that divides both
models' heads, hidden and MLP widths; PP a divisor of world / TP no larger than either model's
layer count; DP = world / (TP·PP) dividing the global batch; every micro-batch size dividing
global batch / DP. A candidate is kept when it passes every check of a single plan (the same
:func:`~.build.build_plan`) and fits the GPU's memory.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..config import ModelConfig, ParallelConfig, RunConfig
from . import PlanError
from .build import LaunchPlan, build_plan
from .hardware import Hardware


def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def with_layout(cfg: RunConfig, tp: int, pp: int, micro_batch: int) -> RunConfig:
    return dataclasses.replace(cfg, parallel=ParallelConfig(tp=tp, pp=pp),
                               train=dataclasses.replace(cfg.train, micro_batch_size=micro_batch))


@dataclass
class Ranking:
    plans: List[LaunchPlan]                                       # fastest first
    refused: List[Tuple[str, str]] = field(default_factory=list)  # (layout, the check it failed)
    over_memory: List[LaunchPlan] = field(default_factory=list)


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
                try:
                    plan = build_plan(with_layout(cfg, tp, pp, mb), nodes=nodes, gpus_per_node=gpus_per_node,
                                      teacher=teacher, hosts=hosts, hardware=hardware)
                except PlanError as e:
                    ranking.refused.append((f"TP={tp} PP={pp} DP={dp} mb={mb}", str(e)))
                    continue
                (ranking.plans if plan.fits else ranking.over_memory).append(plan)
    ranking.plans.sort(key=lambda p: (p.step.total, p.needed_gib, p.tp, p.pp, p.micro_batch))
    return ranking


def layout_name(p: LaunchPlan) -> str:
    return f"TP={p.tp} PP={p.pp} DP={p.dp} mb={p.micro_batch}"


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

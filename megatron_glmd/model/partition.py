"""Pipeline partition of the student's and the co-located teacher's layers, balanced by FLOPs.

Stage k holds a contiguous range of the student's layers and one of the teacher's (docs/design.md,
"Parallelism"). Under 1F1B every micro-batch waits for the slowest stage, so the ranges are chosen
to minimise the largest per-stage cost, counted in hardware FLOPs per token (:mod:`.flops`):

    cost_k = n_s,k · c_s + n_t,k · c_t + [k = p − 1] · (3·logits_s + logits_t)

with c_s a student layer's forward + backward (+ recompute) and c_t a teacher layer's forward. The
first stage's embeddings are look-ups and add no matmul FLOPs (a factorised embedding's projection
is added to the first stage's cost like the logits to the last). Every stage holds at least one
student layer, and at least one teacher layer when the teacher has at least ``pp`` layers.

Algorithm (exact for whole layers; layers of one model all cost the same):

1. The smallest feasible bottleneck ``hi``: binary search over the finite set of possible stage
   costs (``n_s·c_s + n_t·c_t`` plus the stage's extra). Feasibility for a cost window
   ``[lo, hi]`` is a DP over (stage, student layers placed) whose value is the *set* of teacher
   layer counts reachable so far, a bit mask: one stage adds ``n_s ≥ 1`` student layers and any
   teacher count that keeps its cost inside the window.
2. With ``hi`` fixed, the largest feasible floor ``lo`` the same way: the most even partition
   among those with the smallest bottleneck.
3. The ranges are read back from the DP from the last stage to the first, taking the fewest
   student layers then the fewest teacher layers for each earlier stage (so later stages hold
   more, and the first stages, which keep the most micro-batches in flight under 1F1B, less).

Deterministic: the answer depends only on the models, ``pp``, the sequence length, recompute and
``tp`` (which pads the vocabulary). ``pairs`` (student layer, teacher layer) that must share a
stage (the intermediate-layer loss) restrict where a teacher range may end.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import ConfigError, ModelConfig, RunConfig
from .flops import (first_stage_extra_flops, last_stage_extra_flops, layer_forward_flops, stage_flops,
                    student_layer_training_flops)

Range = Tuple[int, int]


@dataclass(frozen=True)
class StageLayers:
    """The global layer ranges ``[start, end)`` of one pipeline stage (``teacher`` None without one)."""

    student: Range
    teacher: Optional[Range] = None


def partition_layers(student: ModelConfig, teacher: Optional[ModelConfig], pp: int, *, seq_length: int,
                     recompute: bool, tp: int,
                     pairs: Optional[Sequence[Tuple[int, int]]] = None) -> List[StageLayers]:
    """For each of the ``pp`` stages, the student's and the teacher's layer ranges, balanced by FLOPs.

    ``teacher`` None partitions the student alone (pretraining). ``recompute``: per-layer activation
    checkpointing of the student (``train.checkpoint_activations``). ``tp`` only pads the vocabulary
    of the logits. Raises ConfigError when ``pp`` exceeds a model's layers or ``pairs`` cannot share
    stages.
    """
    return list(_partition(student, teacher, pp, seq_length, recompute, tp, tuple(pairs) if pairs else None))


def run_partition(cfg: RunConfig, teacher: Optional[ModelConfig], recompute: Optional[bool] = None) -> List[StageLayers]:
    """The partition of a run, what the engine builds and the planner prints: the run's student,
    ``parallel.pp`` and ``parallel.tp``, ``data.seq_length``, ``train.checkpoint_activations``, and,
    when ``loss.intermediate_weight`` > 0, every :func:`uniform_layer_pairs` pair kept on one stage.
    ``teacher`` None (pretraining) partitions the student alone. ``recompute`` overrides
    ``train.checkpoint_activations``, which must otherwise be resolved to a bool (``auto`` is decided
    per layout by :func:`megatron_glmd.plan.checkpointing.resolve_checkpointing`)."""
    if recompute is None:
        recompute = cfg.train.checkpoint_activations
        if not isinstance(recompute, bool):
            raise ConfigError(f"train.checkpoint_activations={recompute!r} must be resolved to true or false "
                              "before the partition (megatron_glmd.plan.checkpointing)")
    pairs = None
    if teacher is not None and cfg.loss.intermediate_weight > 0:
        pairs = uniform_layer_pairs(cfg.model.num_layers, teacher.num_layers)
    return partition_layers(cfg.model, teacher, cfg.parallel.pp, seq_length=cfg.data.seq_length,
                            recompute=recompute, tp=cfg.parallel.tp, pairs=pairs)


def uniform_layer_pairs(student_layers: int, teacher_layers: int) -> List[Tuple[int, int]]:
    """Student layer k and teacher layer ``(k + 1)·L_t // L_s − 1`` (the intermediate-layer loss's map)."""
    return [(k, max((k + 1) * teacher_layers // student_layers - 1, 0)) for k in range(student_layers)]


@functools.lru_cache(maxsize=256)
def _partition(student: ModelConfig, teacher: Optional[ModelConfig], pp: int, seq_length: int, recompute: bool,
               tp: int, pairs: Optional[Tuple[Tuple[int, int], ...]]) -> Tuple[StageLayers, ...]:
    if pp < 1 or pp > student.num_layers:
        raise ConfigError(f"pipeline-parallel size {pp} must be in [1, student num_layers={student.num_layers}]")
    if teacher is not None and pp > teacher.num_layers:
        raise ConfigError(f"pipeline-parallel size {pp} exceeds the teacher's num_layers={teacher.num_layers}")
    return tuple(balance_layers(
        student.num_layers, teacher.num_layers if teacher is not None else 0, pp,
        student_cost=student_layer_training_flops(student, seq_length, recompute),
        teacher_cost=layer_forward_flops(teacher, seq_length) if teacher is not None else 0,
        last_stage_cost=last_stage_extra_flops(student, teacher, tp),
        first_stage_cost=first_stage_extra_flops(student, teacher), with_teacher=teacher is not None, pairs=pairs))


def partition_flops(student: ModelConfig, teacher: Optional[ModelConfig], stages: Sequence[StageLayers], *,
                    seq_length: int, recompute: bool, tp: int):
    """The :class:`~.flops.StageFlops` of each stage of a partition."""
    return [stage_flops(student, teacher, st.student, st.teacher, first=k == 0, last=k == len(stages) - 1,
                        seq_length=seq_length, recompute=recompute, tp=tp) for k, st in enumerate(stages)]


def balance_layers(student_layers: int, teacher_layers: int, pp: int, *, student_cost: int, teacher_cost: int,
                   last_stage_cost: int, first_stage_cost: int = 0, with_teacher: bool = True,
                   pairs: Optional[Sequence[Tuple[int, int]]] = None) -> List[StageLayers]:
    """The partition of the module docstring for integer per-layer costs (the general form)."""
    ls, lt = student_layers, (teacher_layers if with_teacher else 0)
    problem = _Problem(ls, lt, pp, student_cost, teacher_cost if lt else 0,
                       [(last_stage_cost if k == pp - 1 else 0) + (first_stage_cost if k == 0 else 0)
                        for k in range(pp)], 1 if lt >= pp else 0)
    allowed = _allowed_teacher_ends(ls, lt, pairs)
    costs = problem.candidate_costs()
    hi = _first_true(costs, lambda c: problem.reach(0, c, allowed) is not None)
    if hi is None:
        raise ConfigError(f"no partition of {ls} student and {lt} teacher layers into {pp} stages keeps "
                          "every (student, teacher) layer pair on one stage; choose another parallel.pp")
    if lt:    # the most aligned boundaries: |t·L_s − s·L_t| as small as the bottleneck allows
        gaps = sorted({abs(t * ls - s * lt) for s in range(ls + 1) for t in range(lt + 1)})
        gap = _first_true(gaps, lambda g: problem.reach(0, hi, _aligned(allowed, ls, lt, g)) is not None)
        allowed = _aligned(allowed, ls, lt, gap)
    floors = [c for c in costs if c <= hi][::-1]
    lo = _first_true(floors, lambda c: problem.reach(c, hi, allowed) is not None)
    boundaries = problem.read_back(problem.reach(lo, hi, allowed), lo, hi)
    return [StageLayers(student=(s0, s1), teacher=(t0, t1) if with_teacher else None)
            for (s0, t0), (s1, t1) in zip(boundaries, boundaries[1:])]


def _first_true(values, ok):
    """Binary search over ``values`` for the first one where the monotone ``ok`` holds (None if none)."""
    left, right = 0, len(values)
    while left < right:
        mid = (left + right) // 2
        if ok(values[mid]):
            right = mid
        else:
            left = mid + 1
    return values[left] if left < len(values) else None


def _allowed_teacher_ends(ls: int, lt: int, pairs) -> List[int]:
    """Bit mask of the teacher boundaries allowed after each student boundary 0..ls."""
    full = (1 << (lt + 1)) - 1
    allowed = [full] * (ls + 1)
    allowed[0], allowed[ls] = 1, 1 << lt
    for s in range(1, ls) if pairs else ():
        before = [j for i, j in pairs if i < s]
        after = [j for i, j in pairs if i >= s]
        first, last = (max(before) + 1 if before else 0), (min(after) if after else lt)
        allowed[s] = ((1 << (last + 1)) - 1) & ~((1 << first) - 1) if first <= last else 0
    return allowed


def _aligned(allowed: List[int], ls: int, lt: int, gap: int) -> List[int]:
    """``allowed`` restricted to teacher boundaries t with |t·ls − s·lt| <= gap after student boundary s."""
    out = []
    for s, mask in enumerate(allowed):
        first, last = max(0, -(-(s * lt - gap) // ls)), min(lt, (s * lt + gap) // ls)
        out.append(mask & ((1 << (last + 1)) - 1) & ~((1 << first) - 1) if first <= last else 0)
    return out


def _spread(mask: int, low: int, high: int) -> int:
    """OR of ``mask << j`` for j in [low, high] (by doubling)."""
    if high < low:
        return 0
    out, covered, width = mask << low, 1, high - low + 1
    while covered < width:
        step = min(covered, width - covered)
        out |= out << step
        covered += step
    return out


@dataclass
class _Problem:
    ls: int
    lt: int
    pp: int
    cs: int
    ct: int
    extra: List[int]
    nt_min: int

    def candidate_costs(self) -> List[int]:
        values = {n * self.cs + m * self.ct + e for e in set(self.extra)
                  for n in range(1, self.ls + 1) for m in range(self.lt + 1)}
        return sorted(values)

    def teacher_counts(self, k: int, ns: int, lo: int, hi: int) -> Tuple[int, int]:
        """The teacher layer counts [a, b] that keep stage k with ``ns`` student layers in [lo, hi]."""
        base = ns * self.cs + self.extra[k]
        if self.ct == 0:
            return (0, 0) if lo <= base <= hi else (1, 0)
        a = max(self.nt_min, -(-(lo - base) // self.ct))
        return a, (hi - base) // self.ct

    def reach(self, lo: int, hi: int, allowed: List[int]) -> Optional[List[Dict[int, int]]]:
        """reach[k][s]: bit mask of teacher boundaries after k stages ending at student boundary s."""
        reach: List[Dict[int, int]] = [{0: 1}] + [{} for _ in range(self.pp)]
        for k in range(self.pp):
            left = self.pp - k - 1
            cap = (1 << (self.lt - left * self.nt_min + 1)) - 1
            for s, mask in reach[k].items():
                for s1 in range(s + 1, self.ls - left + 1):
                    if k == self.pp - 1 and s1 != self.ls:
                        continue
                    a, b = self.teacher_counts(k, s1 - s, lo, hi)
                    if b < self.nt_min:
                        break               # more student layers only cost more
                    new = _spread(mask, a, b) & cap & allowed[s1]
                    if new:
                        reach[k + 1][s1] = reach[k + 1].get(s1, 0) | new
        return reach if reach[self.pp].get(self.ls, 0) >> self.lt & 1 else None

    def read_back(self, reach, lo: int, hi: int) -> List[Tuple[int, int]]:
        """Stage boundaries (student, teacher) from 0 to the end, fewest layers on earlier stages."""
        ends = [(self.ls, self.lt)]
        for k in range(self.pp - 1, -1, -1):
            s1, t1 = ends[-1]
            ends.append(next((s, t) for s in sorted(reach[k]) if s < s1 for t in range(t1 + 1)
                             if reach[k][s] >> t & 1 and self._fits(k, s1 - s, t1 - t, lo, hi)))
        return ends[::-1]

    def _fits(self, k: int, ns: int, nt: int, lo: int, hi: int) -> bool:
        a, b = self.teacher_counts(k, ns, lo, hi)
        return a <= nt <= b

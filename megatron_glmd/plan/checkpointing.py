"""``train.checkpoint_activations: auto``: per-layer recompute only where memory requires it.

Recompute costs a student layer's forward once more (FLOPs, kernel launches, TP all-reduces) and
buys activation memory; the time model never gains from it. So ``auto`` resolves, for the run's
layout (TP, PP, DP, micro-batch, sequence, both models, precision), to **off** when the peak
stage fits the GPU without it (:mod:`.memory`, on the partition the engine would build without
recompute, plus the reserve), else **on**. Without a memory budget (CPU processes) it is off.

One function for both sides: the planner resolves each layout it plans or ranks with the
``--gpu-memory-gib``/``--reserve-gib`` it is given; the engine (``engine/trainer.py``) resolves the
run's own layout with the memory of its device before it builds the model, and logs the decision.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from ..config import ModelConfig, RunConfig
from ..model.partition import run_partition
from .memory import GiB, stage_memory

AUTO = "auto"


@dataclass(frozen=True)
class CheckpointChoice:
    enabled: bool
    requested: object              # the config's value: True, False or "auto"
    needed_off_gib: float          # peak stage + reserve without recompute
    needed_on_gib: float           # ... and with it
    memory_gib: float              # the budget (0: none)

    @property
    def auto_enabled(self) -> bool:
        """What ``auto`` decides: on only when the peak stage does not fit the budget without it."""
        return self.memory_gib > 0 and self.needed_off_gib > self.memory_gib

    def describe(self) -> str:
        state = "on" if self.enabled else "off"
        if self.requested != AUTO:
            return f"activation checkpointing {state} (train.checkpoint_activations: {str(self.requested).lower()})"
        if self.memory_gib <= 0:
            return f"activation checkpointing auto -> {state}: no memory budget (CPU processes)"
        why = (f"fits without it ({self.needed_off_gib:.2f} GiB <= {self.memory_gib:g} GiB)" if not self.enabled else
               f"{self.needed_off_gib:.2f} GiB without it > {self.memory_gib:g} GiB; {self.needed_on_gib:.2f} GiB with it")
        return f"activation checkpointing auto -> {state}: {why}"


def peak_needed_gib(cfg: RunConfig, teacher: Optional[ModelConfig], dp: int, recompute: bool,
                    reserve_gib: float) -> float:
    """GiB the fullest stage needs (model state, activations or the DP transient, reserve) with or
    without recompute, on the partition the engine builds for that setting."""
    layers = run_partition(cfg, teacher, recompute=recompute)
    peak = max(stage_memory(cfg, teacher, layers[k], k, dp, recompute).total_bytes for k in range(len(layers)))
    return peak / GiB + reserve_gib


def choose_checkpointing(cfg: RunConfig, teacher: Optional[ModelConfig], dp: int, memory_gib: float,
                         reserve_gib: float) -> CheckpointChoice:
    """The decision for the run's layout at data-parallel size ``dp`` and a GPU of ``memory_gib``."""
    requested = cfg.train.checkpoint_activations
    choice = CheckpointChoice(enabled=bool(requested), requested=requested, memory_gib=memory_gib,
                              needed_off_gib=peak_needed_gib(cfg, teacher, dp, False, reserve_gib),
                              needed_on_gib=peak_needed_gib(cfg, teacher, dp, True, reserve_gib))
    return dataclasses.replace(choice, enabled=choice.auto_enabled) if requested == AUTO else choice


def with_checkpointing(cfg: RunConfig, enabled: bool) -> RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_activations=enabled))


def resolve_checkpointing(cfg: RunConfig, teacher: Optional[ModelConfig], dp: int, memory_gib: float,
                          reserve_gib: float) -> Tuple[RunConfig, CheckpointChoice]:
    """``cfg`` with ``train.checkpoint_activations`` a bool, and the decision (for the log and report)."""
    choice = choose_checkpointing(cfg, teacher, dp, memory_gib, reserve_gib)
    return with_checkpointing(cfg, choice.enabled), choice

"""The checks a parallel layout must pass before anything starts, and the teacher's shape.

Rank order is DeepSpeed's ``PipeModelDataParallelTopology(pipe, data, model)``: TP fastest, then
DP, then PP (docs/design.md, "Parallelism"), so stage k holds ranks ``[k·TP·DP, (k+1)·TP·DP)``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence, Tuple

from ..config import (PRESETS, ConfigError, ModelConfig, RunConfig, check_teacher_model, load_config,
                      load_run_config, preset)
from . import PlanError


def check_layout(cfg: RunConfig, nodes: int, gpus_per_node: int) -> int:
    """Layout checks that need the hardware; returns DP. Then the run config's own validation."""
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


def check_teacher(cfg: RunConfig, teacher: Optional[ModelConfig], where: str = "teacher") -> None:
    """The trainer's teacher-compatibility check (:func:`~megatron_glmd.config.check_teacher_model`)."""
    if teacher is None:
        return
    try:
        check_teacher_model(cfg.model, teacher, cfg.parallel.tp, cfg.parallel.pp, where)
    except ConfigError as e:
        raise PlanError(str(e)) from None


def resolve_teacher(cfg: RunConfig, teacher_model: Optional[str]) -> Optional[ModelConfig]:
    """The teacher's shape: from the teacher checkpoint's saved config when it exists (what the trainer
    loads), else from ``teacher_model`` (a preset name or a model YAML); both given must agree."""
    if cfg.mode != "distill":
        return None
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


def stage_ranks(pp_rank: int, tp: int, dp: int) -> Tuple[int, int]:
    """First and last (inclusive) global rank of a stage."""
    return pp_rank * tp * dp, (pp_rank + 1) * tp * dp - 1


def stage_hosts(pp_rank: int, tp: int, dp: int, gpus_per_node: int, hosts: Sequence[str]) -> List[str]:
    first, last = stage_ranks(pp_rank, tp, dp)
    return [hosts[n] for n in range(first // gpus_per_node, last // gpus_per_node + 1)]


def crosses_nodes(ranks: Sequence[int], gpus_per_node: int) -> bool:
    return len({r // gpus_per_node for r in ranks}) > 1

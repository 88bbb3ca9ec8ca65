"""Checks of the checkpoints a run reads, made on every rank before any process group or model exists.

A distill run reads its teacher's checkpoint (so do the task modes 2a and 2b); any run may start
from another run's weights (``init_checkpoint``) and resume from its own ``save_dir``. All
must fit the run (layout, model shape, vocabulary) or the run stops with one line naming the file.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch.distributed as dist

from ..config import ConfigError, ModelConfig, RunConfig, check_teacher_model
from ..config.stage2 import TEACHER_MODES
from ..model.partition import run_partition
from ..plan.checkpointing import AUTO, resolve_checkpointing, with_checkpointing
from ..plan.hardware import Hardware
from . import checkpointing as ckpt
from .elastic import check_dp_change
from ..distill.vocab_compression import check_teacher


def check_compatible(saved: RunConfig, current: RunConfig, save_dir: str, what: str) -> None:
    """Raise ConfigError naming the first layout field in which a saved run cannot be loaded into this one."""
    path = os.path.join(save_dir, ckpt.CONFIG)
    checks = [("parallel.tp", saved.parallel.tp, current.parallel.tp)]
    if what == "resume":
        checks.append(("parallel.pp", saved.parallel.pp, current.parallel.pp))
    for name, old, new in checks:
        if old == new:
            continue
        if what in ("teacher", "init"):
            tp, field = current.parallel.tp, f"{what}_checkpoint"
            raise ConfigError(f"{path}: {what} checkpoint has {name}={old}, this run has {name}={new}: re-lay it "
                              f"out with python tools/reshard_checkpoint.py --source {save_dir} --output "
                              f"{save_dir.rstrip(os.sep)}-tp{tp} --tp {tp} and set {field} to the new folder")
        tp, pp = current.parallel.tp, current.parallel.pp
        out = f"{save_dir.rstrip(os.sep)}-tp{tp}-pp{pp}"
        raise ConfigError(f"{path}: {what} checkpoint has {name}={old}, this run has {name}={new}: resume at "
                          f"{name}={old} (the data-parallel size may change), or re-lay out the weights with python "
                          f"tools/reshard_checkpoint.py --source {save_dir} --output {out} --tp {tp} --pp {pp} and "
                          f"start a new run from them (init_checkpoint={out}, another checkpoint.save_dir): weights "
                          "only, the optimizer state, LR schedule, RNG states and data position are dropped")


def check_same_model(saved: ModelConfig, current: ModelConfig, path: str, what: str) -> None:
    for name in ("architecture", "num_layers", "hidden_size", "num_attention_heads", "vocab_size", "ffn_size",
                 "max_sequence_length", "num_key_value_heads", "tie_word_embeddings", "qkv_bias"):
        old, new = getattr(saved, name), getattr(current, name)
        if old != new:
            raise ConfigError(f"{path}: {what} model has {name}={old}, this run expects {name}={new}")


def teacher_model_config(cfg: RunConfig, compression=None) -> ModelConfig:
    """The teacher's shape from its checkpoint, built as the run uses it: in the run's precision (it is
    never trained), without dropout or recompute (it runs in eval mode, forward only) and with the
    run's attention and compile settings (how it runs, not what it is). With a
    compressed vocabulary the teacher keeps the full one: the artifact's."""
    saved = ckpt.saved_run_config(cfg.teacher_checkpoint)
    path = os.path.join(cfg.teacher_checkpoint, ckpt.CONFIG)
    check_compatible(saved, cfg, cfg.teacher_checkpoint, "teacher")
    teacher = saved.model.replace(dtype=cfg.train.precision, hidden_dropout=0.0, attention_dropout=0.0,
                                  checkpoint_activations=False, attention=cfg.model.attention,
                                  compile=cfg.model.compile)
    student = cfg.model
    if compression is not None:
        check_teacher(teacher, compression, path)
        student = student.replace(vocab_size=teacher.vocab_size)
    check_teacher_model(student, teacher, cfg.parallel.tp, cfg.parallel.pp, path)
    if ckpt.latest_tag(cfg.teacher_checkpoint) is None:
        raise ConfigError(f"teacher_checkpoint {cfg.teacher_checkpoint} has no '{ckpt.LATEST}' file: "
                          "no complete checkpoint to load")
    return teacher


def check_run_checkpoints(cfg: RunConfig, compression=None) -> Optional[ModelConfig]:
    """Check the teacher (distill) and resume checkpoints of a run; returns the teacher's config.
    ``compression``: the run's vocabulary-compression artifact, if any."""
    teacher = None
    if cfg.mode in TEACHER_MODES:
        teacher = teacher_model_config(cfg, compression)
        # Refuses intermediate-loss pairs that no partition keeps together, which does not depend on
        # recompute (train.checkpoint_activations may still be 'auto' here).
        run_partition(cfg, teacher, recompute=False)
    elif cfg.loss.intermediate_weight > 0:
        raise ConfigError("loss.intermediate_weight needs mode 'distill' (it compares with a teacher)")
    if cfg.init_checkpoint:
        check_init_checkpoint(cfg)
    save_dir = cfg.checkpoint.save_dir
    if cfg.checkpoint.load_tag is not None:   # an explicit request: the checkpoint must be there
        ckpt.resume_tag(save_dir, cfg.checkpoint.load_tag)
    if save_dir and cfg.checkpoint.resume and os.path.isdir(save_dir) and \
            (tag := ckpt.resume_tag(save_dir, cfg.checkpoint.load_tag)):
        saved = ckpt.saved_run_config(save_dir)
        check_compatible(saved, cfg, save_dir, "resume")
        check_same_model(saved.model, cfg.model, os.path.join(save_dir, ckpt.CONFIG), "resume")
        world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
        check_dp_change(saved, cfg, os.path.join(save_dir, tag), world)
    return teacher


def check_init_checkpoint(cfg: RunConfig) -> None:
    """``init_checkpoint``: a complete run of the same model shape at the run's TP (any PP)."""
    init = cfg.init_checkpoint
    saved = ckpt.saved_run_config(init)
    check_compatible(saved, cfg, init, "init")
    check_same_model(saved.model, cfg.model, os.path.join(init, ckpt.CONFIG), "init")
    if ckpt.latest_tag(init) is None:
        raise ConfigError(f"init_checkpoint {init} has no '{ckpt.LATEST}' file: no complete checkpoint to load")


def resolve_auto_checkpointing(cfg: RunConfig, teacher: Optional[ModelConfig], world: int, memory_gib: float,
                               reserve_gib: Optional[float] = None) -> Tuple[RunConfig, Optional[str]]:
    """``train.checkpoint_activations: auto`` resolved for this run of ``world`` ranks on a device of
    ``memory_gib``, and the line that says why (``cfg`` and None when the setting is not auto).

    A resumed run keeps the setting its checkpoint was trained with: the layer partition (and so
    each stage's checkpoint files) depends on it, and another data-parallel size or GPU could flip
    the planner's choice. A fresh run takes the planner's choice for its layout and device.
    """
    if cfg.train.checkpoint_activations != AUTO:
        return cfg, None
    save_dir = cfg.checkpoint.save_dir
    if (save_dir and cfg.checkpoint.resume and os.path.isdir(save_dir)
            and ckpt.resume_tag(save_dir, cfg.checkpoint.load_tag)):
        kept = ckpt.saved_run_config(save_dir).train.checkpoint_activations
        if isinstance(kept, bool):
            return (with_checkpointing(cfg, kept), f"activation checkpointing auto -> {'on' if kept else 'off'}: "
                    f"kept from the checkpoint this run resumes ({save_dir}; the layer partition depends on it)")
    dp = world // (cfg.parallel.tp * cfg.parallel.pp)
    reserve = Hardware().reserve_gib if reserve_gib is None else reserve_gib
    cfg, choice = resolve_checkpointing(cfg, teacher, dp, memory_gib, reserve)
    return cfg, choice.describe()

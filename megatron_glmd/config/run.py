"""The run configuration of a training job (``glmd-train --config run.yaml``), typed and validated.

YAML layout (every section optional except ``model`` and ``data``)::

    mode: distill                 # or pretrain (hard-label blank infilling; how teachers are made), or a
                                  # stage-2 task mode (megatron_glmd/config/stage2.py: task:, init_checkpoint:)
    model: {preset: tiny-student} # the model being trained (student), as in megatron_glmd.config
    teacher_checkpoint: runs/teacher   # distill only: a pretrain run's save_dir
    parallel: {tp: 1, pp: 1}      # dp = world size / (tp * pp)
    train: {iterations: 100, micro_batch_size: 4, global_batch_size: 8, precision: fp32, seed: 1234}
    optimizer: {lr: 4.0e-4, warmup_iters: 10, decay_iters: 80}
    loss: {temperature: 15.0}
    data: {train_prefix: data/train, valid_prefix: data/valid, tokenizer_model: tok.model, seq_length: 128}
    checkpoint: {save_dir: runs/student, save_interval: 50}
    logging: {log_interval: 10, tensorboard_dir: runs/student/tb}
    vocab_compression: {artifact: vc/}  # a student of the artifact's K tokens (tools/slice_embeddings.py)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from .base import ConfigError, dataclass_from_dict, read_yaml_mapping
from .model import ModelConfig, from_dict
from .sections import (CheckpointConfig, DataConfig, DistillLossConfig, LoggingConfig, OptimizerConfig,
                       ParallelConfig, TrainConfig)
from .stage2 import TASK_MODES, TEACHER_MODES, TaskSection, model_values, validate_task_run

MODES = ("pretrain", "distill") + TASK_MODES


@dataclass(frozen=True)
class VocabCompressionConfig:
    """docs/design.md, "Vocabulary compression": with ``artifact`` (a directory written by
    tools/slice_embeddings.py) the student has the artifact's K tokens and maps its input ids (and
    hard-label targets); the teacher reads unmapped ids and decodes with its sliced output matrix."""

    artifact: Optional[str] = None


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig
    mode: str = "distill"
    teacher_checkpoint: Optional[str] = None
    parallel: ParallelConfig = ParallelConfig()
    train: TrainConfig = TrainConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    loss: DistillLossConfig = DistillLossConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    vocab_compression: VocabCompressionConfig = VocabCompressionConfig()
    init_checkpoint: Optional[str] = None   # start from this run's weights (fresh optimizer and schedule)
    task: TaskSection = TaskSection()       # the stage-2 task of the task modes

    def validate(self, world_size: int) -> "RunConfig":
        """Check everything that can be checked before any work starts; raise ConfigError naming it."""
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        tp, pp = self.parallel.tp, self.parallel.pp
        if tp < 1 or pp < 1:
            raise ConfigError(f"parallel.tp and parallel.pp must be >= 1, got tp={tp}, pp={pp}")
        if world_size % (tp * pp):
            raise ConfigError(f"world size {world_size} is not divisible by parallel.tp * parallel.pp = {tp} * {pp}")
        self.model.validate(tp_size=tp, pp_size=pp)
        self.train.validate(dp=world_size // (tp * pp))
        self.optimizer.validate()
        self.loss.validate()
        self.data.validate(corpus=self.mode not in TASK_MODES)
        check_decoder_run(self)
        self.checkpoint.validate()
        self.logging.validate(has_validation_data=bool(self.data.valid_prefix))
        validate_task_run(self)
        if self.mode in TEACHER_MODES and not self.teacher_checkpoint:
            made_by = "pretrain" if self.mode == "distill" else "finetune"
            raise ConfigError(f"mode {self.mode!r} needs teacher_checkpoint: the save_dir of a {made_by} run")
        if self.mode in TEACHER_MODES and not os.path.isdir(self.teacher_checkpoint):
            raise ConfigError(f"teacher_checkpoint {self.teacher_checkpoint} does not exist")
        artifact = self.vocab_compression.artifact
        if artifact is not None and not os.path.isdir(artifact):
            raise ConfigError(f"vocab_compression.artifact {artifact} does not exist")
        if self.data.seq_length > self.model.max_sequence_length:
            raise ConfigError(f"data.seq_length {self.data.seq_length} exceeds model.max_sequence_length "
                              f"{self.model.max_sequence_length}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def check_decoder_run(cfg: RunConfig) -> None:
    """A decoder trains on causal samples (data/causal_dataset.py, tasks/encode_causal.py): GLM's
    blank-infilling fields are refused."""
    if not cfg.model.is_decoder:
        return
    if cfg.data.task_mask:
        raise ConfigError("data.task_mask: blank infilling's task mask is GLM's; a decoder "
                          "(model.architecture: decoder) trains on causal samples")


def check_teacher_model(student: ModelConfig, teacher: ModelConfig, tp: int, pp: int, where: str) -> None:
    """The one check that a teacher fits a student's run: same vocabulary, a valid shape at (TP, PP).

    ``where`` names the source of the teacher's shape (its checkpoint's config, a preset) in the error.
    """
    if teacher.architecture != student.architecture:
        raise ConfigError(f"{where}: teacher architecture {teacher.architecture!r}, student architecture "
                          f"{student.architecture!r}: teacher and student must be of one model family")
    if teacher.vocab_size != student.vocab_size:
        raise ConfigError(f"{where}: teacher vocab_size={teacher.vocab_size}, student vocab_size="
                          f"{student.vocab_size}: teacher and student must share the vocabulary")
    try:
        teacher.validate(tp_size=tp, pp_size=pp)
    except ConfigError as e:
        raise ConfigError(f"{where}: teacher model: {e}") from None


_SECTIONS = {"parallel": ParallelConfig, "train": TrainConfig, "optimizer": OptimizerConfig,
             "loss": DistillLossConfig, "data": DataConfig, "checkpoint": CheckpointConfig,
             "logging": LoggingConfig, "vocab_compression": VocabCompressionConfig, "task": TaskSection}


def run_config_from_dict(values: Dict[str, Any], where: str = "") -> RunConfig:
    prefix = f"{where}: " if where else ""
    values = dict(values)
    known = {"mode", "teacher_checkpoint", "init_checkpoint", "model", *_SECTIONS}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{prefix}unknown config section {unknown[0]!r}; known: {', '.join(sorted(known))}")
    values["model"] = model_values(values, prefix)   # a task run may take its model from init_checkpoint
    if values["model"] is None:
        raise ConfigError(f"{prefix}missing required section 'model'")
    if "data" not in values:
        raise ConfigError(f"{prefix}missing required section 'data'")
    kwargs: Dict[str, Any] = {"model": from_dict(values.pop("model"), where=f"{prefix}model")}
    for name, cls in _SECTIONS.items():
        if name in values:
            section = values.pop(name)
            kwargs[name] = dataclass_from_dict(cls, {} if section is None else section, where=f"{prefix}{name}: ")
    for name in ("mode", "teacher_checkpoint", "init_checkpoint"):
        if name in values:
            value = values.pop(name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{prefix}field {name!r} must be a string, got {value!r}")
            kwargs[name] = value
    return RunConfig(**kwargs)


def apply_overrides(values: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a run-config dict."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override expects section.key=value, got {item!r}")
        target = values
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item}: {part!r} is not a section")
        try:
            target[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return values


def load_run_config(path: str, overrides: Sequence[str] = ()) -> RunConfig:
    values = read_yaml_mapping(path, "run config")
    return run_config_from_dict(apply_overrides(values, overrides), where=path)

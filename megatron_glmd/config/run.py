"""The run configuration of a training job (``glmd-train --config run.yaml``), typed and validated.

YAML layout (every section optional except ``model`` and ``data``)::

    mode: distill                 # or pretrain (hard-label blank infilling; how teachers are made)
    model: {preset: tiny-student} # the model being trained (student), as in megatron_glmd.config
    teacher_checkpoint: runs/teacher   # distill only: a pretrain run's save_dir
    parallel: {tp: 1, pp: 1}      # dp = world size / (tp * pp)
    train: {iterations: 100, micro_batch_size: 4, global_batch_size: 8, precision: fp32, seed: 1234}
    optimizer: {lr: 4.0e-4, warmup_iters: 10, decay_iters: 80}
    loss: {temperature: 15.0}
    data: {train_prefix: data/train, valid_prefix: data/valid, tokenizer_model: tok.model, seq_length: 128}
    checkpoint: {save_dir: runs/student, save_interval: 50}
    logging: {log_interval: 10, tensorboard_dir: runs/student/tb}
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from .base import ConfigError, dataclass_from_dict, read_yaml_mapping
from .model import PRECISIONS, ModelConfig, from_dict

MODES = ("pretrain", "distill")
DISTILL_TOKENS = ("valid", "all", "infilled")
DIVERGENCES = ("kl", "mse")
NORMALIZE_BY = ("tokens", "positions")


@dataclass(frozen=True)
class ParallelConfig:
    tp: int = 1
    pp: int = 1


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 100
    micro_batch_size: int = 4
    global_batch_size: int = 8
    precision: str = "fp32"           # fp32 (CPU), bf16 (GPU default), fp16 (dynamic loss scaling)
    seed: int = 1234
    checkpoint_activations: bool = False
    skip_nonfinite_steps: int = 0     # steps with a non-finite loss or grad norm to skip before stopping

    def accumulation_steps(self, dp: int) -> int:
        """Micro-batches per data-parallel rank and optimizer step (the pipeline's micro-batch count)."""
        return self.global_batch_size // (self.micro_batch_size * dp)


@dataclass(frozen=True)
class DistillLossConfig:
    """L'_sp and the paper's ablation switches (docs/design.md, "The loss"); the defaults are GLMD's recipe."""

    temperature: float = 15.0
    distill_tokens: str = "valid"     # valid: m_p (every non-pad token); all: pads too; infilled: Part B only
    divergence: str = "kl"            # kl: τ²·KL(teacher ‖ student); mse: MSE between logits
    normalize_by: str = "tokens"      # tokens: Σ m_p; positions: every position incl. pads (GLMKD)
    hard_label_weight: float = 0.0    # > 0 adds that much blank-infilling cross-entropy
    intermediate_weight: float = 0.0  # > 0 adds that much intermediate-layer hidden-state MSE

    def validate(self) -> "DistillLossConfig":
        if self.temperature <= 0:
            raise ConfigError(f"loss.temperature must be > 0, got {self.temperature}")
        for name, allowed in (("distill_tokens", DISTILL_TOKENS), ("divergence", DIVERGENCES),
                              ("normalize_by", NORMALIZE_BY)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"loss.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("hard_label_weight", "intermediate_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        return self


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam(β1, β2, ε) with decoupled weight decay, linear warm-up then cosine decay to min_lr."""

    lr: float = 4e-4
    min_lr: float = 0.0
    warmup_iters: int = 0
    decay_iters: Optional[int] = None  # cosine decay length after warm-up; default: the remaining iterations
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.1
    clip_grad: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    train_prefix: str = ""           # a preprocessed dataset (PREFIX.bin / PREFIX.idx)
    valid_prefix: Optional[str] = None
    tokenizer_model: str = ""
    seq_length: int = 512
    task_mask: bool = False          # GLM-2B/10B task-mask mode ([MASK] / [sMASK] / [gMASK] mixture)
    seed: int = 1234


@dataclass(frozen=True)
class CheckpointConfig:
    save_dir: Optional[str] = None
    save_interval: int = 0           # 0: only at the end
    resume: bool = True              # continue from save_dir's latest checkpoint when there is one
    keep_last: Optional[int] = None  # keep only this many newest checkpoints (None: keep all)


@dataclass(frozen=True)
class LoggingConfig:
    log_interval: int = 10
    eval_interval: int = 0           # 0: evaluate only at the end (when data.valid_prefix is given)
    eval_iters: int = 4
    tensorboard_dir: Optional[str] = None
    progress_bar: bool = True
    peak_tflops_per_device: Optional[float] = None  # for MFU; default 312 (A100 bf16) on GPU, none on CPU


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
        dp = world_size // (tp * pp)
        t = self.train
        for name in ("iterations", "micro_batch_size", "global_batch_size"):
            if getattr(t, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(t, name)}")
        if t.global_batch_size % (t.micro_batch_size * dp):
            raise ConfigError(f"train.global_batch_size {t.global_batch_size} is not divisible by "
                              f"train.micro_batch_size * data-parallel size = {t.micro_batch_size} * {dp}")
        if t.skip_nonfinite_steps < 0:
            raise ConfigError(f"train.skip_nonfinite_steps must be >= 0, got {t.skip_nonfinite_steps}")
        if t.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
        o = self.optimizer
        if o.lr <= 0 or o.min_lr < 0 or o.min_lr > o.lr:
            raise ConfigError(f"optimizer: need 0 <= min_lr <= lr and lr > 0, got lr={o.lr}, min_lr={o.min_lr}")
        if o.warmup_iters < 0 or (o.decay_iters is not None and o.decay_iters < 1):
            raise ConfigError("optimizer.warmup_iters must be >= 0 and optimizer.decay_iters >= 1")
        self.loss.validate()
        if self.mode == "distill" and not self.teacher_checkpoint:
            raise ConfigError("mode 'distill' needs teacher_checkpoint: the save_dir of a pretrain run")
        if self.mode == "distill" and not os.path.isdir(self.teacher_checkpoint):
            raise ConfigError(f"teacher_checkpoint {self.teacher_checkpoint} does not exist")
        if self.checkpoint.keep_last is not None and self.checkpoint.keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last must be >= 1 (or null to keep all), got {self.checkpoint.keep_last}")
        if self.data.seq_length > self.model.max_sequence_length:
            raise ConfigError(f"data.seq_length {self.data.seq_length} exceeds model.max_sequence_length "
                              f"{self.model.max_sequence_length}")
        if not self.data.train_prefix:
            raise ConfigError("data.train_prefix is empty: give a preprocessed dataset prefix")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def check_teacher_model(student: ModelConfig, teacher: ModelConfig, tp: int, pp: int, where: str) -> None:
    """The one check that a teacher fits a student's run: same vocabulary, a valid shape at (TP, PP).

    ``where`` names the source of the teacher's shape (its checkpoint's config, a preset) in the error.
    """
    if teacher.vocab_size != student.vocab_size:
        raise ConfigError(f"{where}: teacher vocab_size={teacher.vocab_size}, student vocab_size="
                          f"{student.vocab_size}: teacher and student must share the vocabulary")
    try:
        teacher.validate(tp_size=tp, pp_size=pp)
    except ConfigError as e:
        raise ConfigError(f"{where}: teacher model: {e}") from None


_SECTIONS = {"parallel": ParallelConfig, "train": TrainConfig, "optimizer": OptimizerConfig,
             "loss": DistillLossConfig, "data": DataConfig, "checkpoint": CheckpointConfig,
             "logging": LoggingConfig}


def run_config_from_dict(values: Dict[str, Any], where: str = "") -> RunConfig:
    prefix = f"{where}: " if where else ""
    values = dict(values)
    known = {"mode", "teacher_checkpoint", "model", *_SECTIONS}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{prefix}unknown config section {unknown[0]!r}; known: {', '.join(sorted(known))}")
    if "model" not in values:
        raise ConfigError(f"{prefix}missing required section 'model'")
    if "data" not in values:
        raise ConfigError(f"{prefix}missing required section 'data'")
    kwargs: Dict[str, Any] = {"model": from_dict(values.pop("model"), where=f"{where}model" if where else "model")}
    for name, cls in _SECTIONS.items():
        if name in values:
            kwargs[name] = dataclass_from_dict(cls, values.pop(name) or {}, where=f"{prefix}{name}: ")
    for name in ("mode", "teacher_checkpoint"):
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
        target[leaf] = yaml.safe_load(raw)
    return values


def load_run_config(path: str, overrides: Sequence[str] = ()) -> RunConfig:
    values = read_yaml_mapping(path, "run config")
    return run_config_from_dict(apply_overrides(values, overrides), where=path)

"""The sections of a run configuration, each a typed dataclass that validates its own fields.

Every message names the field as ``section.field`` (the form ``--set`` takes). Non-finite numbers
are refused everywhere: a NaN learning rate must stop a run before it starts, not after it trains.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Union

from .base import ConfigError
from .model import PRECISIONS

DISTILL_TOKENS = ("valid", "all", "infilled")
DIVERGENCES = ("kl", "mse")
NORMALIZE_BY = ("tokens", "positions")
TOKENIZER_TYPES = ("auto", "sentencepiece", "glm-bpe", "hf")   # data/tokenizer.py load_tokenizer's types
DECAY_STYLES = ("cosine", "linear")
CHECKPOINT_AUTO = "auto"


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
    # Per-layer recompute of the student: true, false, or auto (the launch planner's choice for the
    # layout: on only where the run does not fit the GPU without it; megatron_glmd.plan.checkpointing).
    checkpoint_activations: Union[bool, str] = False
    skip_nonfinite_steps: int = 0     # steps with a non-finite loss or grad norm to skip before stopping
    epochs: Optional[float] = None    # task modes: sets iterations from the training set (config/stage2.py)

    def accumulation_steps(self, dp: int) -> int:
        """Micro-batches per data-parallel rank and optimizer step (the pipeline's micro-batch count)."""
        return self.global_batch_size // (self.micro_batch_size * dp)

    def validate(self, dp: int) -> "TrainConfig":
        for name in ("iterations", "micro_batch_size", "global_batch_size"):
            _at_least(f"train.{name}", getattr(self, name), 1)
        if self.global_batch_size % (self.micro_batch_size * dp):
            raise ConfigError(f"train.global_batch_size {self.global_batch_size} is not divisible by "
                              f"train.micro_batch_size * data-parallel size = {self.micro_batch_size} * {dp}")
        _at_least("train.skip_nonfinite_steps", self.skip_nonfinite_steps, 0)
        if self.epochs is not None:
            _positive("train.epochs", self.epochs)
        _one_of("train.precision", self.precision, PRECISIONS)
        if not isinstance(self.checkpoint_activations, bool) and self.checkpoint_activations != CHECKPOINT_AUTO:
            raise ConfigError(f"train.checkpoint_activations must be true, false or {CHECKPOINT_AUTO}, "
                              f"got {self.checkpoint_activations!r}")
        return self


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
        _positive("loss.temperature", self.temperature)
        for name, allowed in (("distill_tokens", DISTILL_TOKENS), ("divergence", DIVERGENCES),
                              ("normalize_by", NORMALIZE_BY)):
            _one_of(f"loss.{name}", getattr(self, name), allowed)
        for name in ("hard_label_weight", "intermediate_weight"):
            _at_least(f"loss.{name}", getattr(self, name), 0)
        return self


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam(β1, β2, ε) with decoupled weight decay, linear warm-up then cosine (or linear) decay to min_lr."""

    lr: float = 4e-4
    min_lr: float = 0.0
    warmup_iters: int = 0
    decay_iters: Optional[int] = None  # cosine decay length after warm-up; default: the remaining iterations
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.1
    clip_grad: float = 1.0             # global gradient-norm clip; 0 turns clipping off
    decay_style: str = "cosine"        # cosine, or linear (GLM's fine-tuning)
    warmup_ratio: Optional[float] = None  # task modes: warm-up as a fraction of the iterations (not with warmup_iters)

    def validate(self) -> "OptimizerConfig":
        _positive("optimizer.lr", self.lr)
        _at_least("optimizer.min_lr", self.min_lr, 0)
        if self.min_lr > self.lr:
            raise ConfigError(f"optimizer.min_lr must be <= optimizer.lr ({self.lr}), got {self.min_lr}")
        _at_least("optimizer.warmup_iters", self.warmup_iters, 0)
        if self.decay_iters is not None:
            _at_least("optimizer.decay_iters", self.decay_iters, 1)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ConfigError(f"optimizer.{name} must be in [0, 1), got {value}")
        _positive("optimizer.eps", self.eps)
        _at_least("optimizer.weight_decay", self.weight_decay, 0)
        _at_least("optimizer.clip_grad", self.clip_grad, 0)
        _one_of("optimizer.decay_style", self.decay_style, DECAY_STYLES)
        if self.warmup_ratio is not None:
            if not (math.isfinite(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
                raise ConfigError(f"optimizer.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_iters:
                raise ConfigError("optimizer: give warmup_iters or warmup_ratio, not both")
        return self


@dataclass(frozen=True)
class DataConfig:
    train_prefix: str = ""           # a preprocessed dataset (PREFIX.bin / PREFIX.idx)
    valid_prefix: Optional[str] = None
    tokenizer_model: str = ""
    tokenizer_type: str = "auto"     # sentencepiece | glm-bpe | hf (a tokenizer.json); data/tokenizer.py load_tokenizer
    seq_length: int = 512
    task_mask: bool = False          # GLM-2B/10B task-mask mode ([MASK] / [sMASK] / [gMASK] mixture)
    seed: int = 1234

    def validate(self, corpus: bool = True) -> "DataConfig":
        """``corpus``: the run reads the blank-infilling corpus (not a task mode's files)."""
        if corpus and not self.train_prefix:
            raise ConfigError("data.train_prefix is empty: give a preprocessed dataset prefix")
        _at_least("data.seq_length", self.seq_length, 2)
        if self.tokenizer_type not in TOKENIZER_TYPES:
            raise ConfigError(f"data.tokenizer_type must be one of {', '.join(TOKENIZER_TYPES)}, "
                              f"got {self.tokenizer_type!r}")
        return self


@dataclass(frozen=True)
class CheckpointConfig:
    save_dir: Optional[str] = None
    save_interval: int = 0           # 0: only at the end
    resume: bool = True              # continue from save_dir's latest checkpoint when there is one
    keep_last: Optional[int] = None  # keep only this many newest checkpoints (None: keep all)
    load_tag: Optional[str] = None   # resume from this checkpoint (e.g. iter_0000400) instead of `latest`

    def validate(self) -> "CheckpointConfig":
        _at_least("checkpoint.save_interval", self.save_interval, 0)
        if self.keep_last is not None:
            _at_least("checkpoint.keep_last (or null to keep all)", self.keep_last, 1)
        if self.save_dir and os.path.exists(self.save_dir) and not os.path.isdir(self.save_dir):
            raise ConfigError(f"checkpoint.save_dir: {self.save_dir} is a file, not a directory")
        if self.load_tag is not None and not self.save_dir:
            raise ConfigError("checkpoint.load_tag needs checkpoint.save_dir (the checkpoints it names are there)")
        return self


@dataclass(frozen=True)
class LoggingConfig:
    log_interval: int = 10
    eval_interval: int = 0           # 0: evaluate only at the end (when data.valid_prefix is given)
    eval_iters: int = 4
    tensorboard_dir: Optional[str] = None
    progress_bar: bool = True
    peak_tflops_per_device: Optional[float] = None  # for MFU; default 312 (A100 bf16) on GPU, none on CPU
    verbose: bool = False            # True: DeepSpeed's own log lines and prints too (engine/quiet.py)

    def validate(self, has_validation_data: bool) -> "LoggingConfig":
        _at_least("logging.log_interval", self.log_interval, 1)
        _at_least("logging.eval_interval", self.eval_interval, 0)
        if has_validation_data:
            _at_least("logging.eval_iters", self.eval_iters, 1)
        if self.peak_tflops_per_device is not None:
            _positive("logging.peak_tflops_per_device", self.peak_tflops_per_device)
        return self


def _at_least(name: str, value, low) -> None:
    if not (math.isfinite(value) and value >= low):
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _positive(name: str, value) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value}")


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

"""The stage-2 parts of a run configuration (docs/design.md, "The two stages"): the task modes, the
``task:`` section, a model taken from ``init_checkpoint`` and the epoch-based schedule of GLM's
fine-tuning. Standard library and PyYAML only.

    mode: task_logits                 # finetune | task_distill (2a) | task_logits (2b) | evaluate
    init_checkpoint: runs/rte/student_2a  # start from this run's weights: fresh optimizer and schedule
    teacher_checkpoint: runs/rte/teacher  # task_distill / task_logits: a finetune run
    task: {name: rte, data_dir: data/RTE}     # a SuperGLUE task (train.jsonl, val.jsonl, test.jsonl) ...
    # task: {file: data/wordnet/task.yaml}    # ... or a task of your own (megatron_glmd/config/task.py)
    train: {epochs: 50, ...}          # iterations = ceil(epochs * training examples / global batch)
    optimizer: {warmup_ratio: 0.1, decay_style: linear, ...}

Without a ``model`` section (or with a partial one, e.g. ``--set model.hidden_dropout=0.1``) the
model is the init checkpoint's, with the given keys on top.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .base import ConfigError, read_yaml_mapping

TASK_MODES = ("finetune", "task_distill", "task_logits", "evaluate")
TEACHER_MODES = ("distill", "task_distill", "task_logits")      # runs that read a teacher_checkpoint
SUPERGLUE_TASKS = ("boolq", "cb", "copa", "rte", "wic", "wsc", "multirc", "record")
SPLITS = ("train", "dev", "test")
SUPERGLUE_FILES = {"train": "train.jsonl", "dev": "val.jsonl", "test": "test.jsonl"}   # SuperGLUE's names
_MODEL_REQUIRED = ("num_layers", "hidden_size", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class TaskSection:
    name: Optional[str] = None        # a SuperGLUE task, one of SUPERGLUE_TASKS
    data_dir: Optional[str] = None    # the SuperGLUE task's folder (train.jsonl, val.jsonl, test.jsonl)
    file: Optional[str] = None        # or: the YAML description of a task of your own
    eval_split: str = "dev"           # what evaluation (periodic, final, mode evaluate) scores
    num_choices: int = 0              # multi-token tasks: candidates per example (0: the most in the run's splits)
    soft_temperature: float = 1.0     # tau of the 2b soft cross-entropy (GLMD: 1, no tau^2)
    results: Optional[str] = None     # the metrics JSON (default: checkpoint.save_dir/eval_<split>.json)

    def validate(self, mode: str) -> "TaskSection":
        given = self.name is not None or self.file is not None
        if mode not in TASK_MODES:
            if given:
                raise ConfigError(f"task: only the modes {', '.join(TASK_MODES)} read a task, this run is {mode!r}")
            return self
        if not given:
            raise ConfigError(f"mode {mode!r} needs a task: task.name (a SuperGLUE task) with task.data_dir, "
                              "or task.file (a task YAML)")
        if self.name is not None and self.file is not None:
            raise ConfigError("task: give task.name (SuperGLUE) or task.file (a task YAML), not both")
        if self.name is not None:
            if self.name.lower() not in SUPERGLUE_TASKS:
                raise ConfigError(f"task.name must be one of {', '.join(SUPERGLUE_TASKS)}, got {self.name!r} "
                                  "(a task of your own goes in task.file)")
            if not self.data_dir or not os.path.isdir(self.data_dir):
                raise ConfigError(f"task.data_dir: {self.data_dir!r} is not a folder (the SuperGLUE task's "
                                  "train.jsonl, val.jsonl, test.jsonl)")
        elif not os.path.isfile(self.file):
            raise ConfigError(f"task.file: {self.file} does not exist")
        if self.eval_split not in SPLITS:
            raise ConfigError(f"task.eval_split must be one of {', '.join(SPLITS)}, got {self.eval_split!r}")
        if not (isinstance(self.num_choices, int) and self.num_choices >= 0):
            raise ConfigError(f"task.num_choices must be >= 0, got {self.num_choices}")
        if not (math.isfinite(self.soft_temperature) and self.soft_temperature > 0):
            raise ConfigError(f"task.soft_temperature must be a finite number > 0, got {self.soft_temperature}")
        return self


def validate_task_run(cfg) -> None:
    """What a run of a task mode needs besides its sections' own checks (``cfg`` a RunConfig)."""
    cfg.task.validate(cfg.mode)
    if cfg.train.epochs is not None and cfg.mode not in TASK_MODES:
        raise ConfigError(f"train.epochs needs a task mode ({', '.join(TASK_MODES)}); a stage-1 run is sized by "
                          "train.iterations")
    if cfg.optimizer.warmup_ratio is not None and cfg.mode not in TASK_MODES:
        raise ConfigError("optimizer.warmup_ratio needs a task mode; a stage-1 run sets optimizer.warmup_iters")
    if cfg.init_checkpoint is not None and not os.path.isdir(cfg.init_checkpoint):
        raise ConfigError(f"init_checkpoint {cfg.init_checkpoint} does not exist")
    if cfg.mode not in TASK_MODES:
        return
    if cfg.mode == "evaluate" and not cfg.init_checkpoint:
        raise ConfigError("mode 'evaluate' needs init_checkpoint: the run whose model it scores")
    for name in ("hard_label_weight", "intermediate_weight"):
        if getattr(cfg.loss, name) > 0:
            raise ConfigError(f"loss.{name} is a stage-1 switch; the task modes use no labels (2a, 2b) or only "
                              "the task's labels (finetune)")
    if cfg.vocab_compression.artifact is not None:
        raise ConfigError("vocab_compression is not wired into the task modes yet: run stage 2 on the full vocabulary")


def resolve_schedule(cfg, num_train_examples: int):
    """``cfg`` with ``train.epochs`` and ``optimizer.warmup_ratio`` turned into iteration counts:
    iterations = ceil(epochs · examples / global batch), warm-up = round(ratio · iterations)."""
    train, opt = cfg.train, cfg.optimizer
    if train.epochs is not None:
        if not (math.isfinite(train.epochs) and train.epochs > 0):
            raise ConfigError(f"train.epochs must be a finite number > 0, got {train.epochs}")
        if train.global_batch_size >= 1:
            iterations = max(1, math.ceil(train.epochs * num_train_examples / train.global_batch_size))
            train = dataclasses.replace(train, iterations=iterations)
    if opt.warmup_ratio is not None:
        if not (math.isfinite(opt.warmup_ratio) and 0 <= opt.warmup_ratio < 1):
            raise ConfigError(f"optimizer.warmup_ratio must be in [0, 1), got {opt.warmup_ratio}")
        opt = dataclasses.replace(opt, warmup_iters=round(opt.warmup_ratio * train.iterations), warmup_ratio=None)
    return dataclasses.replace(cfg, train=train, optimizer=opt)


def model_values(values: Dict[str, Any], prefix: str = "") -> Optional[Dict[str, Any]]:
    """The run's ``model`` section: with an ``init_checkpoint`` and no complete model (no preset, no shape),
    the init checkpoint's saved model with the given keys on top."""
    given = values.get("model")
    init = values.get("init_checkpoint")
    if not isinstance(init, str) or (isinstance(given, dict) and (
            "preset" in given or all(k in given for k in _MODEL_REQUIRED))):
        return given
    if given is not None and not isinstance(given, dict):
        return given
    path = os.path.join(init, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"{prefix}init_checkpoint: {path} is missing: {init} is not a megatron-glmd run "
                          "(and the model section does not give the shape)")
    saved = read_yaml_mapping(path, "run config").get("model")
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: has no model section")
    return {**saved, **(given or {})}

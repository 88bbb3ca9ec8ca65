"""The data of a task run (docs/design.md, "The two stages"): the cloze task named by the run's
``task:`` section, its splits as samples of the model's family (GLM's blank infilling, or a decoder's
causal samples read after the whole pattern: :mod:`megatron_glmd.tasks.encode_causal`), epochs of
the training split, and batches.

Everything is read, tokenised and checked before any process group exists, so bad task input (a
line without the field, a label outside the verbalizer, a verbalizer word of several tokens, an
example that cannot fit ``data.seq_length``) stops the run with one line naming the file, the line
and the field. Each sample carries ``index``, its position in its split, so that evaluation can put
the predictions of every rank back in order.

Batches are those of :mod:`megatron_glmd.tasks.batch` plus ``index [b]`` and, for single-token
tasks, ``choice_mask [b, 1]`` of ones: every task batch has the fields of :data:`LABEL_KEYS`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from ..config import ConfigError, RunConfig
from ..config.stage2 import SUPERGLUE_FILES
from ..data.errors import DataError
from ..tasks import ClozeDataset, ClozeTask, load_task, read_split, read_superglue, superglue_task
from ..config.task import load_task_config
from .data import check_tokenizer

# What the task objective's loss reads, for every task mode (multi-token rows are example-major).
LABEL_KEYS = ("target_ids", "loss_mask", "length", "sep", "choice_mask", "label", "index")


@dataclass
class TaskData:
    """A run's task, its tokenizer and its splits (``train`` is None for mode ``evaluate``)."""

    task: ClozeTask
    train: Optional[ClozeDataset]
    eval: ClozeDataset
    eval_split: str
    num_choices: int                 # candidates per example of a multi-token task (1 for single-token)
    verbalizer_ids: List[int]        # single-token tasks: each label's token id, in label order

    @property
    def multi_token(self) -> bool:
        return self.task.multi_token


def _read(cfg: RunConfig, split: str):
    if cfg.task.file:
        return read_split(load_task_config(cfg.task.file), split)
    path = os.path.join(cfg.task.data_dir, SUPERGLUE_FILES[split])
    return read_superglue(cfg.task.name, path, train=split == "train")


def _check_encodes(dataset: ClozeDataset, split: str) -> None:
    if len(dataset) == 0:
        raise DataError(f"task {dataset.task.name}: the {split} split has no examples")
    for i in range(len(dataset)):
        dataset[i]          # raises DataError naming the example's file and line


def load_task_data(cfg: RunConfig) -> TaskData:
    """The task data of a task-mode run (ConfigError / DataError on bad input, before any work)."""
    tokenizer = check_tokenizer(cfg)
    task = load_task(cfg.task.file) if cfg.task.file else superglue_task(cfg.task.name)
    splits = ([] if cfg.mode == "evaluate" else ["train"]) + [cfg.task.eval_split]
    sets = {}
    for split in dict.fromkeys(splits):
        sets[split] = ClozeDataset(task, _read(cfg, split), tokenizer, cfg.data.seq_length, causal=cfg.model.is_decoder)
        _check_encodes(sets[split], split)
    num_choices = 1
    if task.multi_token:
        most = max(s.max_candidates for s in sets.values())
        num_choices = cfg.task.num_choices or most
        if most > num_choices:
            raise ConfigError(f"task.num_choices is {num_choices}, but an example of task {task.name} has {most} "
                              "candidates: raise task.num_choices (or 0: the most of any example)")
    return TaskData(task, sets.get("train"), sets[cfg.task.eval_split], cfg.task.eval_split, num_choices,
                    [] if task.multi_token else list(sets[cfg.task.eval_split].verbalizer_ids))


class EpochSamples:
    """``num_samples`` training samples: epoch after epoch of the split, each in its own order, a pure
    function of (seed, epoch), so that a resumed run continues exactly."""

    def __init__(self, dataset: ClozeDataset, num_samples: int, seed: int):
        self.dataset, self.num_samples, self.seed = dataset, int(num_samples), int(seed)
        self._order = (-1, None)

    def __len__(self) -> int:
        return self.num_samples

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset)))
        return self._order[1]

    def __getitem__(self, i: int) -> dict:
        n = len(self.dataset)
        k = int(self._permutation(i // n)[i % n])
        return {**self.dataset[k], "index": k}

    def fingerprint(self) -> dict:
        return {"examples": len(self.dataset), "num_samples": self.num_samples, "seed": self.seed}


class PaddedSplit:
    """A split padded to whole global batches by repeating its first example; ``real`` examples count."""

    def __init__(self, dataset: ClozeDataset, global_batch_size: int):
        self.dataset, self.real = dataset, len(dataset)
        self.size = -(-self.real // global_batch_size) * global_batch_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i if i < self.real else 0], "index": i}


class TaskCollate:
    """Collation of task samples into the batch the task objective reads (module docstring)."""

    def __init__(self, data: TaskData):
        self.dataset, self.num_choices = data.eval, data.num_choices

    def __call__(self, samples: List[dict]) -> dict:
        batch = self.dataset.collate(samples, self.num_choices)
        b = len(samples)
        if "choice_mask" not in batch:
            batch["choice_mask"] = torch.ones(b, 1)
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        return batch

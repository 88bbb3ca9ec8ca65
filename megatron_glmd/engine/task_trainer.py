"""The stage-2 task runs (docs/design.md, "The two stages") on the same engine as stage 1.

``finetune`` (hard-label CE over verbalizer logits: how the task teacher is made), ``task_distill``
(2a: L'_sp at τ = 15 on the task's inputs), ``task_logits`` (2b: soft CE of the task logits at
τ = 1) and ``evaluate`` (the metrics of ``init_checkpoint``'s model on a split). The
:class:`TaskTrainer` is the stage-1 :class:`.trainer.Trainer` with the task's objective
(:mod:`.task_objective`), data (:mod:`.task_data`) and evaluation: predictions of every example of
the split, gathered from the last stage's DP ranks with one MAX all-reduce (int64, engine device),
scored by :func:`megatron_glmd.tasks.compute_metrics`; rank 0 prints them and writes a JSON.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from ..atomic_io import atomic_write_text
from ..config import RunConfig
from ..config.stage2 import resolve_schedule
from ..data.loader import DataParallelLoader
from ..tasks import compute_metrics
from ..distill.task_data import EpochSamples, PaddedSplit, TaskCollate, TaskData, load_task_data
from ..distill.task_objective import TaskObjective
from .trainer import Trainer


class TaskTrainer(Trainer):
    """A task-mode run: build with :meth:`from_config` (reads and checks the task data first)."""

    def __init__(self, cfg: RunConfig, data: TaskData, log=print):
        if data.train is not None:
            cfg = resolve_schedule(cfg, len(data.train))    # train.epochs, optimizer.warmup_ratio
        self.task_data = data
        self.collate = TaskCollate(data)
        self.eval_set = PaddedSplit(data.eval, cfg.train.global_batch_size)
        train = self.eval_set if data.train is None else \
            EpochSamples(data.train, cfg.train.iterations * cfg.train.global_batch_size, cfg.data.seed)
        self.objective_class = functools.partial(TaskObjective, multi_token=data.multi_token,
                                                 num_choices=data.num_choices, verbalizer_ids=data.verbalizer_ids)
        self.last_predictions: Dict[str, List[int]] = {}
        super().__init__(cfg, train, self.eval_set, log=log)

    @classmethod
    def from_config(cls, cfg: RunConfig, log=print) -> "TaskTrainer":
        """Check the configuration, then read and check the task data; then build the run."""
        world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
        return cls(cfg.validate(world), load_task_data(cfg), log=log)

    def _loader(self, dataset) -> DataParallelLoader:
        t = self.cfg.train
        return DataParallelLoader(dataset, t.global_batch_size, t.micro_batch_size, self.grid.dp_rank, self.dp,
                                  collate_fn=self.collate)

    def train(self) -> List[Dict[str, float]]:
        if self.cfg.mode == "evaluate":
            self.stopped_early = False
            return []      # nothing to train: finish() scores init_checkpoint's model
        return super().train()

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, dataset=None, iterations: Optional[int] = None) -> Dict[str, float]:
        """The task's metrics of the student (and, with a teacher, ``teacher/...``) on the eval split,
        and the student's label cross-entropy as ``loss``; every rank returns the same."""
        loader = self._loader(self.eval_set)
        self.objective.predictions = []
        try:
            sums = self._eval_sums(loader, loader.num_global_batches, 2)
            predictions = self._gather_predictions()
        finally:
            self.objective.predictions = []
        real = self.eval_set.real
        examples = self.task_data.eval.examples
        self.last_predictions = {"student": predictions[0, :real].tolist()}
        metrics = {"loss": float(sums[0] / sums[1].clamp(min=1.0))} if sums[1] > 0 else {}
        metrics.update(self._metrics(examples, self.last_predictions["student"]))
        if self.teacher_config is not None:
            self.last_predictions["teacher"] = predictions[1, :real].tolist()
            metrics.update({f"teacher/{k}": v for k, v in
                            self._metrics(examples, self.last_predictions["teacher"]).items()})
        return metrics

    def _metrics(self, examples, predictions: List[int]) -> Dict[str, float]:
        if not any(e.label >= 0 for e in examples):
            return {}      # an unlabelled split (test): predictions only
        return compute_metrics(self.task_data.task, examples, predictions)

    def _gather_predictions(self) -> torch.Tensor:
        """``[2, padded split]`` int64 student and teacher predictions on every rank: the last stage's DP
        ranks each fill their own examples, the rest hold -1, and one MAX all-reduce joins them."""
        table = torch.full((2, len(self.eval_set)), -1, dtype=torch.long, device=self.device)
        for rows in self.objective.predictions:
            table[:, rows[0]] = rows[1:].to(self.device)
        if dist.get_world_size() > 1:
            dist.all_reduce(table, op=dist.ReduceOp.MAX)
        return table.cpu()

    # ------------------------------------------------------------------ the end of a run
    def results_path(self) -> Optional[str]:
        task, save_dir = self.cfg.task, self.cfg.checkpoint.save_dir
        if task.results:
            return task.results
        return os.path.join(save_dir, f"eval_{task.eval_split}.json") if save_dir else None

    def finish(self) -> Dict[str, float]:
        """Evaluate on the eval split; rank 0 prints the metrics and writes them (and the predictions) as
        JSON to :meth:`results_path`."""
        metrics = self.evaluate()
        data = self.task_data
        shown = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "no labelled examples"
        self.log(f"{data.task.name} {data.eval_split} ({self.eval_set.real} examples): {shown}")
        path = self.results_path()
        if path and dist.get_rank() == 0:
            labels = data.task.labels if not data.multi_token else None
            record = {"task": data.task.name, "split": data.eval_split, "examples": self.eval_set.real,
                      "mode": self.cfg.mode, "model": self.cfg.init_checkpoint if self.cfg.mode == "evaluate"
                      else self.cfg.checkpoint.save_dir, "metrics": metrics,
                      "predictions": [{"guid": e.guid, "prediction": labels[p] if labels else p}
                                      for e, p in zip(data.eval.examples, self.last_predictions["student"])]}
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            atomic_write_text(path, json.dumps(record, indent=1))
            self.log(f"wrote {path}")
        return metrics

"""What a stage-2 task run minimises (docs/design.md, "The two stages"), with the interface of
:class:`.objective.Objective`: :meth:`TaskObjective.begin_step` counts the global batch once (one
all-reduce over DP, on the engine's device), :meth:`TaskObjective.loss` is the pipeline's loss_fn,
and evaluation returns sums.

Task logits ``[b, n]`` (:mod:`megatron_glmd.tasks.scoring`): a single-token task's verbalizer logits
read at ``sep`` (the [sop], GLM's way), or a multi-token task's candidate log-likelihoods, its
``b·n`` candidate rows example-major with ``choice_mask [b, n]`` marking the real ones.

    finetune      label CE over the student's task logits         / global count of label >= 0
    task_distill  L'_sp (stage 1's loss, loss.temperature) on the task's inputs, m_p times the
                  choice mask of each candidate row                / global Σ m_p, as stage 1
    task_logits   soft CE of teacher vs student task logits at task.soft_temperature (no τ²)
                                                                   / global example count
    evaluate      (and evaluation of the others) sums only: the student's label CE and labelled
                  count; the predictions (argmax over the real candidates) of the student and, in
                  2a/2b, of the teacher are kept with each example's ``index``.

As in stage 1 each micro-batch returns Σ · (accumulation · DP) / global count, so the reported loss
is the global sum over the global count at any layout.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from ..config import RunConfig
from ..parallel.grid import ParallelGrid
from ..tasks import candidate_log_probs, choice_scores, label_cross_entropy_sum, soft_cross_entropy_sum
from ..tasks import check_verbalizer_ids, verbalizer_logits
from .losses import distill_loss_sums, distill_normalizer
from .objective import RankLoss, global_counts
from .task_data import LABEL_KEYS

PART = {"finetune": "label_ce", "task_distill": "distill", "task_logits": "soft_ce", "evaluate": "label_ce"}
EVAL_FIELDS = ("label_ce", "labelled")


def kept_rows(length: torch.Tensor, loss_mask: torch.Tensor, choice_mask: torch.Tensor):
    """``length`` and ``loss_mask`` with the padded candidate rows emptied (m_p = 0 there)."""
    keep = choice_mask.reshape(-1)
    return length * (keep > 0).long(), loss_mask * keep.unsqueeze(1).to(loss_mask.dtype)


class TaskObjective(RankLoss):
    """The loss of a task-mode run on this rank (module docstring)."""

    label_keys = LABEL_KEYS
    intermediate_weight = 0.0         # a stage-1 ablation only

    def __init__(self, cfg: RunConfig, grid: ParallelGrid, device: torch.device, compression=None, *,
                 multi_token: bool, num_choices: int, verbalizer_ids: Sequence[int]):
        if compression is not None:
            raise ValueError("vocabulary compression is not wired into the task modes")
        super().__init__(cfg, grid, device)
        model = cfg.model
        self.multi_token, self.num_choices = multi_token, num_choices
        if not multi_token:       # checked once here: verbalizer_logits takes the device tensor as checked
            check_verbalizer_ids(verbalizer_ids, model.vocab_size)
        self.verbalizer_ids = torch.tensor(list(verbalizer_ids), dtype=torch.long, device=device)
        self.part = PART[cfg.mode]
        self.weights = {self.part: 1.0}
        self.parts = {self.part: torch.zeros((), device=device)}
        self.evaluating = False
        self.predictions: List[torch.Tensor] = []     # [3, b] (index, student, teacher) per evaluated micro-batch
        self._normalizers: Dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ before the step
    def begin_step(self, batches: List[Dict[str, torch.Tensor]], loss_scale: float = 1.0) -> float:
        """Count the global batch (one all-reduce over DP): Σ m_p, examples, labelled examples."""
        local = []
        for b in batches:
            length, loss_mask = kept_rows(b["length"], b["loss_mask"], b["choice_mask"])
            local.append([float(distill_normalizer(self.cfg.loss, length, loss_mask)), float(b["label"].numel()),
                          float((b["label"] >= 0).sum())])
        counts = global_counts(local, self.grid, self.device)
        self._normalizers = {"distill": counts[0].float(), "soft_ce": counts[1].float(), "label_ce": counts[2].float()}
        return 0.0

    # ------------------------------------------------------------------ task logits
    def task_logits(self, logits: torch.Tensor, target_ids, loss_mask, sep) -> torch.Tensor:
        """fp32 ``[b, n]``, replicated over the TP group."""
        group = self.grid.tp_group
        if not self.multi_token:
            return verbalizer_logits(logits, sep, self.verbalizer_ids, group)
        return choice_scores(candidate_log_probs(logits, target_ids, loss_mask, group, self.vocab_end),
                             self.num_choices)

    def _mask(self, choice_mask: torch.Tensor) -> Optional[torch.Tensor]:
        return choice_mask if self.multi_token else None

    # ------------------------------------------------------------------ the pipeline's loss_fn
    def loss(self, outputs, labels) -> torch.Tensor:
        target_ids, loss_mask, length, sep, choice_mask, label, index = (x.to(self.device) for x in labels)
        if self.evaluating:
            return self.eval_sums(outputs, target_ids, loss_mask, sep, choice_mask, label, index)
        student, tp_group = outputs[0], self.grid.tp_group
        if self.part == "distill":
            kept_length, kept_mask = kept_rows(length, loss_mask, choice_mask)
            value = distill_loss_sums(self.cfg.loss, student, outputs[1], target_ids, kept_mask, kept_length,
                                      tp_group=tp_group, vocab_end=self.vocab_end,
                                      vocab_size=self.cfg.model.vocab_size)["distill"]
        else:
            scores = self.task_logits(student, target_ids, loss_mask, sep)
            if self.part == "soft_ce":
                with torch.no_grad():
                    teacher = self.task_logits(outputs[1], target_ids, loss_mask, sep)
                value = soft_cross_entropy_sum(scores, teacher, self.cfg.task.soft_temperature,
                                               mask=self._mask(choice_mask))
            else:
                value = label_cross_entropy_sum(scores, label, mask=self._mask(choice_mask))
        normalized = value * (self.accumulation * self.grid.dp_size) / self._normalizers[self.part]
        self.parts = {self.part: normalized.detach()}
        return normalized

    def predict(self, scores: torch.Tensor, choice_mask: torch.Tensor) -> torch.Tensor:
        """The index of the best label or real candidate of each example."""
        if self.multi_token:
            scores = scores.masked_fill(choice_mask == 0, float("-inf"))
        return scores.argmax(-1)

    def eval_sums(self, outputs, target_ids, loss_mask, sep, choice_mask, label, index) -> torch.Tensor:
        """``[len(EVAL_FIELDS)]`` sums of one micro-batch; keeps (index, student, teacher) predictions."""
        scores = self.task_logits(outputs[0], target_ids, loss_mask, sep)
        teacher = torch.full_like(index, -1)
        if len(outputs) > 1:
            teacher = self.predict(self.task_logits(outputs[1], target_ids, loss_mask, sep), choice_mask)
        self.predictions.append(torch.stack([index, self.predict(scores, choice_mask), teacher]))
        ce = label_cross_entropy_sum(scores, label, mask=self._mask(choice_mask))
        return torch.stack([ce.float(), (label >= 0).sum().float()])

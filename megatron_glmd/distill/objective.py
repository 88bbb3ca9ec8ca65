"""What a run minimises and how it is normalised: the objective of one training step.

The pipeline's last stage calls :meth:`Objective.loss` on every micro-batch. Loss parts travel as
sums over this micro-batch's tokens (:mod:`.losses`); :meth:`Objective.begin_step` counts the
tokens of the whole global batch (every micro-batch, every data-parallel rank) once before the
step, so that each part is divided exactly once by its global count:

    DeepSpeed reports mean over (micro-batches × DP ranks) of the returned loss
    returned loss = Σ_parts weight · sum_part · (accumulation · DP) / global_count_part
    ⇒ reported loss = Σ_parts weight · (Σ over the global batch of sum_part) / global_count_part

In evaluation the same call returns raw sums (:data:`EVAL_FIELDS`), added up by the trainer.
With vocabulary compression (:mod:`.vocab_compression`) every hard-label target is mapped to its
student row first, and evaluation also counts the targets outside the kept set.
The intermediate-layer ablation is the one part computed outside the last stage: its gradient is
injected per stage, scaled by the factor set here (the "scale handshake").
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..model.attention_mask import valid_token_mask
from ..parallel.grid import ParallelGrid
from ..parallel.vocab import vocab_shard_real_columns
from .losses import KERNEL_MODES, check_kernel_backend, distill_loss_sums, distill_normalizer, hard_label_normalizer, hard_label_sum

LABEL_KEYS = ("target_ids", "loss_mask", "length")   # what the stage-1 loss reads (Objective.label_keys)
EVAL_FIELDS = ("kl", "student_ce", "teacher_ce", "valid_tokens", "target_tokens", "dropped_targets")


def global_counts(rows: List[List[float]], grid: ParallelGrid, device: torch.device) -> torch.Tensor:
    """Column sums of per-micro-batch counts over the global batch (every micro-batch, every DP rank),
    each at least 1: one fp64 all-reduce over DP, on the engine's device (an nccl group has no CPU
    backend)."""
    counts = torch.tensor(rows, dtype=torch.float64, device=device).sum(0)
    if grid.dp_size > 1:
        dist.all_reduce(counts, group=grid.dp_group)
    return counts.clamp(min=1.0)


class RankLoss:
    """What every run's loss on this rank starts from: the run, its grid and the engine's device (a
    fused-loss mode's kernel path checked there), the accumulation steps, and ``vocab_end``, the
    real (non-padding) columns of this TP rank's logits shard."""

    label_keys = LABEL_KEYS      # the batch fields the last stage's loss reads

    def __init__(self, cfg: RunConfig, grid: ParallelGrid, device: torch.device):
        self.cfg, self.grid, self.device = cfg, grid, device
        if cfg.mode in KERNEL_MODES:
            check_kernel_backend(device)
        self.accumulation = cfg.train.accumulation_steps(grid.dp_size)
        model = cfg.model
        self.vocab_end = vocab_shard_real_columns(model.vocab_size, model.padded_vocab_size(grid.tp_size),
                                                  grid.tp_rank, grid.tp_size)


class Objective(RankLoss):
    """The loss of a ``pretrain`` or ``distill`` run on this rank, over vocab-parallel logit shards."""

    def __init__(self, cfg: RunConfig, grid: ParallelGrid, device: torch.device, compression=None):
        super().__init__(cfg, grid, device)
        # Compressed vocabulary: original id -> student row, and which original ids were dropped.
        self.target_rows = self.dropped = None
        if compression is not None:
            self.target_rows = compression.student_ids().to(device)
            self.dropped = (compression.token_map != torch.arange(compression.vocab_size)).to(device)
        distill = cfg.mode == "distill"
        self.weights = {"hard_label": 1.0} if not distill else {"distill": 1.0}
        if distill and cfg.loss.hard_label_weight > 0:
            self.weights["hard_label"] = cfg.loss.hard_label_weight
        self.intermediate_weight = cfg.loss.intermediate_weight if distill else 0.0
        self.evaluating = False
        self._normalizers: Dict[str, torch.Tensor] = {}
        self._intermediate_denominator = 1.0
        # The last step's normalised parts, reported through DeepSpeed's additional losses (every
        # stage must know their names, so they exist from the start).
        self.parts = {name: torch.zeros((), device=device) for name in self.weights}

    # ------------------------------------------------------------------ before the step
    def begin_step(self, batches: List[Dict[str, torch.Tensor]], loss_scale: float = 1.0) -> float:
        """Count the global batch's tokens (one all-reduce over DP, on the engine's device).

        Returns the gradient factor of the intermediate-layer loss sum on each stage (0 without it):
        d(total loss)/d(stage sum), times DP (DeepSpeed averages gradients over DP) and the fp16 loss
        scale (DeepSpeed scales the loss, not the injected gradient)."""
        counts = global_counts([[float(distill_normalizer(self.cfg.loss, b["length"], b["loss_mask"])),
                                 float(hard_label_normalizer(b["loss_mask"])), float(b["length"].sum())]
                                for b in batches], self.grid, self.device)
        self._normalizers = {"distill": counts[0].float(), "hard_label": counts[1].float()}
        if self.intermediate_weight <= 0:
            return 0.0
        self._intermediate_denominator = float(counts[2]) * self.cfg.model.num_layers
        return self.intermediate_weight * self.grid.dp_size * loss_scale / self._intermediate_denominator

    # ------------------------------------------------------------------ the pipeline's loss_fn
    def loss(self, outputs, labels) -> torch.Tensor:
        """Training: the weighted, globally normalised loss of one micro-batch. Evaluation: raw sums."""
        target_ids, loss_mask, length = (x.to(self.device) for x in labels)
        if self.evaluating:
            return self.eval_sums(outputs, target_ids, loss_mask, length)
        target_ids = self.student_targets(target_ids)
        student_logits, tp_group = outputs[0], self.grid.tp_group
        if self.cfg.mode == "pretrain":
            sums = {"hard_label": hard_label_sum(student_logits, target_ids, loss_mask, tp_group=tp_group,
                                                 vocab_end=self.vocab_end)}
        else:
            sums = distill_loss_sums(self.cfg.loss, student_logits, outputs[1], target_ids, loss_mask, length,
                                     tp_group=tp_group, vocab_end=self.vocab_end,
                                     vocab_size=self.cfg.model.vocab_size)
        scale = self.accumulation * self.grid.dp_size
        normalized = {k: v * scale / self._normalizers[k] for k, v in sums.items()}
        self.parts = {k: v.detach() for k, v in normalized.items()}
        return sum(self.weights[k] * v for k, v in normalized.items())

    def student_targets(self, target_ids: torch.Tensor) -> torch.Tensor:
        """Targets as student rows: mapped through the compressed vocabulary, if any."""
        return target_ids if self.target_rows is None else self.target_rows[target_ids]

    def eval_sums(self, outputs, target_ids, loss_mask, length) -> torch.Tensor:
        """``[len(EVAL_FIELDS)]`` sums of one micro-batch: student–teacher KL at τ = 1 over valid
        tokens, student and teacher blank-infilling cross-entropy (on mapped targets), the two
        token counts, and the targets outside the kept set of a compressed vocabulary."""
        from kernels.softmax_kl import softmax_kl

        dropped = torch.zeros((), device=self.device)
        if self.dropped is not None:
            dropped = (self.dropped[target_ids] & (loss_mask > 0)).sum()
        target_ids = self.student_targets(target_ids)

        tp_group, logits = self.grid.tp_group, outputs[0]
        v = logits.shape[-1]
        valid = valid_token_mask(length, target_ids.shape[1]).reshape(-1)
        kl = teacher_ce = torch.zeros((), device=self.device)
        if len(outputs) > 1:
            kl = softmax_kl(logits.reshape(-1, v), outputs[1].reshape(-1, v), temperature=1.0, mask=valid,
                            group=tp_group, vocab_end=self.vocab_end, scale_by_t2=False, reduction="sum")
            teacher_ce = hard_label_sum(outputs[1], target_ids, loss_mask, tp_group=tp_group, vocab_end=self.vocab_end)
        student_ce = hard_label_sum(logits, target_ids, loss_mask, tp_group=tp_group, vocab_end=self.vocab_end)
        return torch.stack([kl.float(), student_ce.float(), teacher_ce.float(), valid.sum().float(),
                            (loss_mask > 0).sum().float(), dropped.float()])

    # ------------------------------------------------------------------ after the step
    def intermediate_loss(self, stage_sums: List[torch.Tensor]) -> float:
        """This step's intermediate-layer MSE per token and layer pair, over all stages and DP ranks."""
        total = (torch.stack(stage_sums).sum() if stage_sums else torch.zeros((), device=self.device))
        total = total.float().reshape(1)
        for group, size in ((self.grid.pp_group, self.grid.pp_size), (self.grid.dp_group, self.grid.dp_size)):
            if size > 1:
                dist.all_reduce(total, group=group)
        return float(total) / self._intermediate_denominator

    @staticmethod
    def eval_metrics(totals: torch.Tensor, with_teacher: bool, compressed: bool = False) -> Dict[str, float]:
        """Per-token held-out metrics from the summed :data:`EVAL_FIELDS` (compressed: KL over the
        kept tokens, losses on mapped targets, and the share of targets outside the kept set)."""
        kl, s_ce, t_ce, n_valid, n_target, n_dropped = totals.tolist()
        metrics = {"student_loss": s_ce / max(n_target, 1.0)}
        if with_teacher:
            metrics.update(teacher_loss=t_ce / max(n_target, 1.0), kl=kl / max(n_valid, 1.0))
        if compressed:
            metrics["targets_outside_kept"] = n_dropped / max(n_target, 1.0)
        return metrics

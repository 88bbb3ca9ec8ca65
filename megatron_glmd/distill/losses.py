"""GLMD's word-prediction distillation loss L'_sp and its ablations (docs/design.md, "The loss").

Losses travel as sums: each function returns the *sum* over this micro-batch's selected tokens,
and the engine divides once by the number of selected tokens in the whole global batch (all
micro-batches, all data-parallel ranks).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.distributed as dist

from kernels.softmax_kl import select_backend, softmax_kl

from ..config import ConfigError, DistillLossConfig
from ..model.attention_mask import valid_token_mask
from ..parallel.cross_entropy import vocab_parallel_cross_entropy
from ..parallel.mappings import reduce_from_tp

KERNEL_MODES = ("distill", "task_distill")   # the modes whose loss is the fused softmax-KL


def check_kernel_backend(device: torch.device) -> str:
    """The fused loss's path on ``device`` ("triton" or "torch"), checked before any work: a bad
    GLMD_SOFTMAX_KL_BACKEND value, or a GPU without triton, is one error line at start-up rather
    than a traceback at the first distillation step."""
    try:
        return select_backend(device.type, fp64=False)
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from None


def distill_token_mask(cfg: DistillLossConfig, length: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """The tokens L'_sp is computed on (``m_p`` by default)."""
    if cfg.distill_tokens == "valid":
        return valid_token_mask(length, loss_mask.shape[1])
    if cfg.distill_tokens == "all":
        return torch.ones_like(loss_mask, dtype=torch.bool)
    return loss_mask > 0


def distill_normalizer(cfg: DistillLossConfig, length: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """This micro-batch's share of the global denominator."""
    if cfg.normalize_by == "positions":
        return torch.tensor(float(loss_mask.numel()), device=loss_mask.device)
    return distill_token_mask(cfg, length, loss_mask).sum().float()


def hard_label_normalizer(loss_mask: torch.Tensor) -> torch.Tensor:
    return (loss_mask > 0).sum().float()


def _mse_sum(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, group, vocab_end: int,
             vocab_size: int) -> torch.Tensor:
    """Σ over masked tokens of mean-over-vocabulary squared logit difference (the paper's MSE ablation)."""
    dtype = torch.promote_types(student.dtype, torch.float32)
    diff = (student[:, :vocab_end].to(dtype) - teacher[:, :vocab_end].to(dtype)).square().sum(-1)
    diff = diff * mask
    diff = reduce_from_tp(diff, group)  # each rank's partial sum gets the full upstream gradient
    return diff.sum() / vocab_size


def distill_loss_sums(cfg: DistillLossConfig, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      target_ids: torch.Tensor, loss_mask: torch.Tensor, length: torch.Tensor, *,
                      tp_group: Optional[dist.ProcessGroup], vocab_end: int,
                      vocab_size: int) -> Dict[str, torch.Tensor]:
    """Per-micro-batch sums of the distillation loss parts over vocab-parallel logits ``[b, s, V_r]``.

    Returns ``{"distill": Σ L'_sp, "hard_label": Σ CE}`` (the latter only if its weight > 0).
    """
    v = student_logits.shape[-1]
    student = student_logits.reshape(-1, v)
    teacher = teacher_logits.reshape(-1, v)
    mask = distill_token_mask(cfg, length, loss_mask).reshape(-1)
    if cfg.divergence == "kl":
        distill = softmax_kl(student, teacher, temperature=cfg.temperature, mask=mask, group=tp_group,
                             vocab_end=vocab_end, scale_by_t2=True, reduction="sum")
    else:
        distill = _mse_sum(student, teacher, mask.float(), tp_group, vocab_end, vocab_size)
    parts = {"distill": distill}
    if cfg.hard_label_weight > 0:
        parts["hard_label"] = hard_label_sum(student_logits, target_ids, loss_mask, tp_group=tp_group,
                                             vocab_end=vocab_end)
    return parts


def hard_label_sum(logits: torch.Tensor, target_ids: torch.Tensor, loss_mask: torch.Tensor, *,
                   tp_group: Optional[dist.ProcessGroup], vocab_end: int) -> torch.Tensor:
    """Σ over Part-B target tokens of the blank-infilling cross-entropy (teacher pre-training loss)."""
    v = logits.shape[-1]
    ce = vocab_parallel_cross_entropy(logits.reshape(-1, v), target_ids.reshape(-1), tp_group, vocab_end)
    return (ce * (loss_mask.reshape(-1) > 0)).sum()

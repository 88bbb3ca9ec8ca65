"""Stage-2 losses on task logits ``[b, n]`` (verbalizer logits or candidate scores), as sums over
examples that the engine divides once by the global example count (docs/design.md, "The two stages").

* :func:`soft_cross_entropy_sum`, L_st of stage 2b: ``−Σ_i Σ_c softmax(t_i/τ)_c · log_softmax(s_i/τ)_c``
  at τ = 1 by default and without a τ² factor (GLMD's final task loss). The teacher gets no gradient.
* :func:`label_cross_entropy_sum`, fine-tuning (how the teacher is made): ``−Σ_i log_softmax(s_i)_{y_i}``
  over examples with a target (``y_i >= 0``).

The engine's normaliser is the global count of examples a sum covers: ``(target >= 0).sum()`` for
fine-tuning, the batch size for 2b (no labels).

``mask [b, n]`` (True / nonzero on real candidates) leaves out padded candidates of a multi-token
batch; every example must keep at least one. Both compute in fp32 (at least); task logits are
replicated over the TP group, so every TP rank computes the same value.
"""
from __future__ import annotations

from typing import Optional

import torch


def _masked(logits: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if mask is None:
        return x
    return x.masked_fill(mask.to(x.device) == 0, float("-inf"))


def _check(student: torch.Tensor, other: torch.Tensor, what: str) -> None:
    if student.dim() != 2 or other.shape[0] != student.shape[0]:
        raise ValueError(f"student task logits must be [b, n] with {what} for each row, got "
                         f"{tuple(student.shape)} and {tuple(other.shape)}")


def soft_cross_entropy_sum(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                           mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ over examples of the teacher-weighted cross-entropy of the student's task distribution."""
    _check(student, teacher, "teacher logits")
    if teacher.shape != student.shape or temperature <= 0:
        raise ValueError(f"teacher {tuple(teacher.shape)} must match student {tuple(student.shape)}, "
                         f"temperature > 0 (got {temperature})")
    log_q = torch.log_softmax(_masked(student, mask) / temperature, dim=-1)
    p = torch.softmax(_masked(teacher.detach(), mask) / temperature, dim=-1)
    terms = p * log_q
    if mask is not None:
        terms = torch.where(mask.to(terms.device) != 0, terms, torch.zeros_like(terms))
    return -terms.sum()


def label_cross_entropy_sum(student: torch.Tensor, target: torch.Tensor,
                            mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ over examples with ``target >= 0`` of −log softmax(student)[target]."""
    _check(student, target, "a target")
    log_q = torch.log_softmax(_masked(student, mask), dim=-1)
    target = target.to(log_q.device).long()
    has = target >= 0
    picked = log_q.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
    return -torch.where(has, picked, torch.zeros_like(picked)).sum()


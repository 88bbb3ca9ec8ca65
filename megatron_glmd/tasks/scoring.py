"""Task logits from vocab-parallel logit shards, never gathering the vocabulary (docs/design.md,
"The two stages" and "Communication rules").

* :func:`verbalizer_logits`: a single-token task's logits ``[b, n_labels]``: the logits of the
  [MASK]'s prediction (row ``positions[i]`` of sample i; :mod:`.encode` puts it at ``sep``, the
  [sop]) at the verbalizer ids. TP rank r holds the contiguous ids ``[r·V_r, (r+1)·V_r)``; each rank
  picks the columns of the ids it holds (zeros elsewhere) and one SUM all-reduce of the fp32
  ``[b, n_labels]`` tensor, made from the logits on their device, gives every rank the whole
  result (``reduce_from_tp``: the backward is the identity, each rank's gradient reaches its own
  columns only).
* :func:`candidate_log_probs`: a multi-token candidate's score ``Σ_t log p(target_t)`` over its
  Part-B tokens (``loss_mask``), via :func:`vocab_parallel_cross_entropy` (``log p = −CE``) over every
  position, weighted by the mask (no boolean selection: that is a host synchronisation);
  ``vocab_end`` excludes padded columns of the last shard.
* :func:`choice_scores`: per-candidate scores of ``[b·n]`` flattened samples as ``[b, n]``.

The collectives carry fp32 tensors on the logits' device: NCCL carries both.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist

from ..parallel.cross_entropy import vocab_parallel_cross_entropy
from ..parallel.mappings import group_rank, group_size, reduce_from_tp


def check_verbalizer_ids(verbalizer_ids: Sequence[int], vocab_size: int) -> None:
    """Raise ValueError unless the ids are a non-empty list of ids in ``[0, vocab_size)`` (host values)."""
    ids = [int(i) for i in verbalizer_ids]
    if not ids or min(ids) < 0 or max(ids) >= vocab_size:
        raise ValueError(f"verbalizer ids must be a non-empty list of ids in [0, {vocab_size}), got {ids}")


def verbalizer_logits(logits: torch.Tensor, positions: torch.Tensor, verbalizer_ids,
                      group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """fp32 ``[b, n_labels]`` from this rank's shard ``logits [b, s, V_r]``, ``positions [b]`` and global
    ``verbalizer_ids [n_labels]``; differentiable with respect to ``logits``.

    Ids given as a list are checked here; a tensor of ids is taken as checked (reading a device
    tensor's values would make the host wait for the device: the task objective checks its list
    once with :func:`check_verbalizer_ids` and keeps the tensor on the device)."""
    if logits.dim() != 3 or positions.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [b, s, V_r] and positions [b], got {tuple(logits.shape)} and "
                         f"{tuple(positions.shape)}")
    b, _, shard = logits.shape
    if not isinstance(verbalizer_ids, torch.Tensor):
        check_verbalizer_ids(verbalizer_ids, shard * group_size(group))
    ids = torch.as_tensor(verbalizer_ids, dtype=torch.long, device=logits.device)
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(f"verbalizer ids must be a non-empty list, got shape {tuple(ids.shape)}")
    rows = logits[torch.arange(b, device=logits.device), positions.to(logits.device)]    # [b, V_r]
    local = ids - group_rank(group) * shard
    held = (local >= 0) & (local < shard)
    picked = rows[:, local.clamp(0, shard - 1)].float()                                  # [b, n_labels]
    picked = torch.where(held.unsqueeze(0), picked, torch.zeros_like(picked))
    return reduce_from_tp(picked, group)


def candidate_log_probs(logits: torch.Tensor, target_ids: torch.Tensor, loss_mask: torch.Tensor,
                        group: Optional[dist.ProcessGroup] = None, vocab_end: Optional[int] = None) -> torch.Tensor:
    """fp32 ``[N]``: ``Σ_t loss_mask[n, t] · log p(target_ids[n, t])`` from shards ``logits [N, s, V_r]``."""
    if logits.dim() != 3 or target_ids.shape != logits.shape[:2] or loss_mask.shape != logits.shape[:2]:
        raise ValueError(f"logits must be [N, s, V_r] with target_ids and loss_mask [N, s], got "
                         f"{tuple(logits.shape)}, {tuple(target_ids.shape)}, {tuple(loss_mask.shape)}")
    n, s, v = logits.shape
    ce = vocab_parallel_cross_entropy(logits.reshape(n * s, v), target_ids.to(logits.device).reshape(-1), group,
                                      vocab_end)
    # Every position's CE, weighted by the mask: selecting the masked positions first would need their
    # count on the host (a synchronisation); a finite CE times 0 adds nothing, values or gradients.
    return -(ce.float().view(n, s) * loss_mask.to(logits.device).float()).sum(-1)


def choice_scores(log_probs: torch.Tensor, num_choices: int) -> torch.Tensor:
    """``[b·n]`` candidate scores of flattened samples (example-major) as ``[b, n]``."""
    if log_probs.dim() != 1 or log_probs.numel() % num_choices:
        raise ValueError(f"{tuple(log_probs.shape)} scores do not split into groups of {num_choices}")
    return log_probs.view(-1, num_choices)

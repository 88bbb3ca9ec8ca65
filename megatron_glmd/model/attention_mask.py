"""GLM's blank-infilling attention mask and the padding mask, built from ``sep`` and ``length`` per sample."""
from __future__ import annotations

import torch


def glm_attention_mask(sep: torch.Tensor, length: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Boolean mask ``[b, 1, s, s]``, True where query i may attend to key j.

    - Part A (positions < sep) attends bidirectionally within Part A.
    - Part B (positions >= sep) attends to all of Part A and causally to itself.
    - Keys at or beyond ``length`` (padding) are hidden from every query; a padding query sees
      itself only so that no softmax row is empty (its output is never used).
    """
    if sep.dim() != 1 or length.shape != sep.shape:
        raise ValueError(f"sep and length must both be [batch], got {tuple(sep.shape)} and {tuple(length.shape)}")
    device = sep.device
    i = torch.arange(seq_len, device=device).view(1, seq_len, 1)
    j = torch.arange(seq_len, device=device).view(1, 1, seq_len)
    sep = sep.view(-1, 1, 1)
    length = length.view(-1, 1, 1)
    allowed = ((j < sep) | (j <= i)) & (j < length)
    allowed = allowed | (i == j)
    return allowed.unsqueeze(1)


def valid_token_mask(length: torch.Tensor, seq_len: int) -> torch.Tensor:
    """``[b, s]`` bool: True on the non-padding tokens of each sample (the keys the mask above shows)."""
    return torch.arange(seq_len, device=length.device).unsqueeze(0) < length.unsqueeze(1)


def causal_document_mask(position_ids: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """The decoder family's boolean mask ``[b, 1, s, s]``, True where query i may attend to key j.

    Causal (``j <= i``) within a document: a document starts wherever ``position_ids [b, s]`` is 0,
    so documents packed into one sample never see each other. Keys at or beyond ``length [b]``
    (padding) are hidden; a padding query sees itself only, so that no softmax row is empty.
    """
    if position_ids.dim() != 2 or length.dim() != 1 or length.shape[0] != position_ids.shape[0]:
        raise ValueError(f"position_ids must be [batch, seq] and length [batch], got "
                         f"{tuple(position_ids.shape)} and {tuple(length.shape)}")
    seq_len = position_ids.shape[1]
    document = torch.cumsum((position_ids == 0).to(torch.int32), dim=1)       # [b, s]
    i = torch.arange(seq_len, device=position_ids.device).view(1, seq_len, 1)
    j = torch.arange(seq_len, device=position_ids.device).view(1, 1, seq_len)
    same = document.unsqueeze(2) == document.unsqueeze(1)
    allowed = (j <= i) & same & (j < length.view(-1, 1, 1))
    return (allowed | (i == j)).unsqueeze(1)

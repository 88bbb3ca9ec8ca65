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

"""Rotary position embeddings of the decoder family, with the ``rope_scaling`` variants its configs use.

Formulas as in the Llama/Qwen2 reference implementations (``transformers``), so that imported
models give their released logits:

* inverse frequencies ``1 / θ^(2i/d)`` for ``i < d/2`` (θ = ``rope_theta``, d the head dimension);
* ``llama3`` scaling (Llama 3.1/3.2): wavelengths ``2π/f`` longer than ``L/low_freq_factor`` are
  divided by ``factor``, shorter than ``L/high_freq_factor`` kept, and those in between
  interpolated with ``(L/λ − low)/(high − low)`` (L = ``original_max_position_embeddings``);
* the angle of position p is ``p·f``, duplicated over both halves of the head (the "rotate half"
  pairing of dimension j with j + d/2), cos and sin computed in fp32 and cast to the activations.

The angles come from ``position_ids`` on every stage, so documents packed into one sample each
start at position 0 (docs/design.md, "The decoder family").
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch


def inverse_frequencies(head_dim: int, theta: float, scaling: Optional[dict] = None) -> torch.Tensor:
    """fp32 ``[head_dim / 2]`` inverse frequencies under ``rope_scaling`` (None or "default": unscaled)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = None if scaling is None else scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv
    if kind != "llama3":
        raise ValueError(f"unknown rope_scaling type {kind!r}")
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv
    scaled = torch.where(wavelength > context / low, inv / factor, inv)
    smooth = (context / wavelength - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= context / high) & (wavelength <= context / low)
    return torch.where(medium, smoothed, scaled)


def rotary_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor,
                   dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[b, 1, s, head_dim]`` for ``position_ids [b, s]``."""
    angles = position_ids.float().unsqueeze(-1) * inv_freq.to(position_ids.device).view(1, 1, -1)
    angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [b, heads, s, head_dim]``: ``x·cos + rotate_half(x)·sin``."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin

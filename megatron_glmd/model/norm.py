"""LayerNorm: apex's fused kernel when apex is importable and a GPU is present, torch's otherwise."""
from __future__ import annotations

import torch
from torch import nn

from ..parallel.layers import mark_parameter

try:  # apex is optional and not on PyPI
    from apex.normalization import FusedLayerNorm as _ApexLayerNorm
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _ApexLayerNorm = None


def apex_available() -> bool:
    return _ApexLayerNorm is not None and torch.cuda.is_available()


def layer_norm(hidden_size: int, eps: float, dtype=None, device=None) -> nn.Module:
    if apex_available():
        norm = _ApexLayerNorm(hidden_size, eps=eps).to(dtype=dtype, device=device)
    else:
        norm = nn.LayerNorm(hidden_size, eps=eps, dtype=dtype, device=device)
    mark_parameter(norm.weight, ("ones",))
    mark_parameter(norm.bias, ("zeros",))
    return norm

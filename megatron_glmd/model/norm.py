"""Norms: GLM's LayerNorm (apex's fused kernel when apex is importable and a GPU is present, torch's
otherwise) and the decoder family's RMSNorm."""
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


class RMSNorm(nn.Module):
    """Root-mean-square norm of the decoder family: ``w · x / sqrt(mean(x²) + eps)``.

    Computed in fp32 and cast back before the weight multiplies, as the Llama/Qwen2 reference
    implementations do, so that imported bf16 models keep their released numerics.
    """

    def __init__(self, hidden_size: int, eps: float, dtype=None, device=None):
        super().__init__()
        self.eps = eps
        self.weight = mark_parameter(nn.Parameter(torch.empty(hidden_size, dtype=dtype, device=device)), ("ones",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)

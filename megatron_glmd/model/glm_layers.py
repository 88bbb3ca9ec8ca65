"""GLM's block (pre-LayerNorm; the decoder family's is decoder_layers.py), written once for any TP size."""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..parallel.layers import ColumnParallelLinear, RowParallelLinear
from ..parallel.mappings import group_size
from .attention import AttentionMask, attend
from .norm import layer_norm


class ParallelSelfAttention(nn.Module):
    """Fused QKV (column-parallel, rows laid out [head, q|k|v, head_dim]) → :func:`.attention.attend`
    (flex or SDPA, by the prepared mask) → row-parallel output."""

    def __init__(self, config: ModelConfig, tp_group: Optional[dist.ProcessGroup], dtype=None, device=None):
        super().__init__()
        h = config.hidden_size
        self.local_heads = config.num_attention_heads // group_size(tp_group)
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.qkv = ColumnParallelLinear(h, 3 * h, init_std=config.init_std, tp_group=tp_group,
                                        dtype=dtype, device=device)
        self.dense = RowParallelLinear(h, h, init_std=config.output_init_std, tp_group=tp_group,
                                       dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, attention_mask: AttentionMask) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.qkv(x).view(b, s, self.local_heads, 3, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=3))       # [b, heads, s, hd]
        ctx = attend(q, k, v, attention_mask, self.dropout if self.training else 0.0)
        return self.dense(ctx.transpose(1, 2).reshape(b, s, self.local_heads * self.head_dim))


class ParallelMLP(nn.Module):
    """h → ffn (column-parallel) → GeLU → h (row-parallel).

    The GeLU variant is ``config.gelu``: GLM's training code uses the tanh approximation, its
    Hugging Face port the exact (erf) form; an imported model keeps its source's so that its
    logits stay those of the released model.
    """

    def __init__(self, config: ModelConfig, tp_group: Optional[dist.ProcessGroup], dtype=None, device=None):
        super().__init__()
        self.dense_h_to_4h = ColumnParallelLinear(config.hidden_size, config.ffn_size, init_std=config.init_std,
                                                  tp_group=tp_group, dtype=dtype, device=device)
        self.dense_4h_to_h = RowParallelLinear(config.ffn_size, config.hidden_size,
                                               init_std=config.output_init_std, tp_group=tp_group,
                                               dtype=dtype, device=device)
        self.approximate = "tanh" if config.gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate=self.approximate))


class GLMBlock(nn.Module):
    def __init__(self, config: ModelConfig, tp_group: Optional[dist.ProcessGroup] = None, dtype=None, device=None):
        super().__init__()
        eps = config.layernorm_epsilon
        self.input_layernorm = layer_norm(config.hidden_size, eps, dtype=dtype, device=device)
        self.attention = ParallelSelfAttention(config, tp_group, dtype=dtype, device=device)
        self.post_attention_layernorm = layer_norm(config.hidden_size, eps, dtype=dtype, device=device)
        self.mlp = ParallelMLP(config, tp_group, dtype=dtype, device=device)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout)  # replicated activations: shared stream

    def forward(self, x: torch.Tensor, attention_mask: AttentionMask) -> torch.Tensor:
        x = x + self.hidden_dropout(self.attention(self.input_layernorm(x), attention_mask))
        return x + self.hidden_dropout(self.mlp(self.post_attention_layernorm(x)))

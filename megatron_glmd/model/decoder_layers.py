"""The decoder family's block (Llama / Qwen2 / Mistral): RMSNorm, grouped-query attention with
rotary embeddings, SwiGLU MLP; pre-norm residuals. Written once for any TP size from the
column-/row-parallel layers GLM uses.

Layouts that keep a contiguous TP split right at every TP size (docs/design.md, "The decoder family"):

* ``attention.query`` ``[heads · head_dim, h]``: column-parallel, whole query heads per rank.
* ``attention.key_value`` ``[kv_heads, k|v, head_dim]`` rows: column-parallel with whole KV heads per
  rank when TP divides ``num_key_value_heads``. When TP is a multiple of it instead, each rank keeps
  the whole (small) tensor replicated and uses the one KV head its query heads share; its gradient
  is summed over the TP group (``copy_to_tp`` on the weight), so every copy stays identical.
* ``mlp.gate_up`` ``[ffn, gate|up, h]`` rows (gate and up interleaved per FFN unit): one
  column-parallel matmul whose contiguous TP split gives each rank matching gate and up units.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..parallel.layers import ColumnParallelLinear, RowParallelLinear, mark_parameter
from ..parallel.mappings import copy_to_tp, group_rank, group_size
from .attention import AttentionMask, attend
from .norm import RMSNorm
from .rope import apply_rotary


class GroupedQueryAttention(nn.Module):
    """Q (column-parallel), K|V (column-parallel or replicated, see the module docstring), RoPE,
    attention, output projection (row-parallel, no bias)."""

    def __init__(self, config: ModelConfig, tp_group: Optional[dist.ProcessGroup], dtype=None, device=None):
        super().__init__()
        tp, h, d = group_size(tp_group), config.hidden_size, config.head_dim
        kv = config.num_key_value_heads
        self.tp_group = tp_group
        self.head_dim = d
        self.local_heads = config.num_attention_heads // tp
        self.dropout = config.attention_dropout
        self.query = ColumnParallelLinear(h, config.num_attention_heads * d, bias=config.qkv_bias,
                                          init_std=config.init_std, tp_group=tp_group, dtype=dtype, device=device)
        self.replicated_kv = kv % tp != 0
        if self.replicated_kv:   # TP is a multiple of kv: rank r's query heads all share KV head r // (tp / kv)
            self.kv_index = group_rank(tp_group) // (tp // kv)
            self.key_value = nn.Linear(h, 2 * kv * d, bias=config.qkv_bias, dtype=dtype, device=device)
            mark_parameter(self.key_value.weight, ("normal", config.init_std))
            if config.qkv_bias:
                mark_parameter(self.key_value.bias, ("zeros",))
        else:
            self.key_value = ColumnParallelLinear(h, 2 * kv * d, bias=config.qkv_bias, init_std=config.init_std,
                                                  tp_group=tp_group, dtype=dtype, device=device)
        for param in self.key_value.parameters():   # the checkpoint splits them by whole KV heads or not at all
            param.tp_units = kv
        self.dense = RowParallelLinear(config.num_attention_heads * d, h, bias=False,
                                       init_std=config.output_init_std, tp_group=tp_group, dtype=dtype, device=device)

    def _key_value(self, x: torch.Tensor) -> torch.Tensor:
        if not self.replicated_kv:
            return self.key_value(x)
        rows = 2 * self.head_dim
        weight = copy_to_tp(self.key_value.weight, self.tp_group)[self.kv_index * rows:(self.kv_index + 1) * rows]
        bias = self.key_value.bias
        if bias is not None:
            bias = copy_to_tp(bias, self.tp_group)[self.kv_index * rows:(self.kv_index + 1) * rows]
        return F.linear(copy_to_tp(x, self.tp_group), weight, bias)

    def forward(self, x: torch.Tensor, mask: AttentionMask, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.query(x).view(b, s, self.local_heads, self.head_dim).transpose(1, 2)
        kv = self._key_value(x).view(b, s, -1, 2, self.head_dim)
        k, v = (t.transpose(1, 2) for t in kv.unbind(dim=3))                 # [b, kv_local, s, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        ctx = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.dense(ctx.transpose(1, 2).reshape(b, s, self.local_heads * self.head_dim))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) · up(x))``: gate and up as one column-parallel matmul, down row-parallel."""

    def __init__(self, config: ModelConfig, tp_group: Optional[dist.ProcessGroup], dtype=None, device=None):
        super().__init__()
        h, f = config.hidden_size, config.ffn_size
        self.gate_up = ColumnParallelLinear(h, 2 * f, bias=False, init_std=config.init_std, tp_group=tp_group,
                                            dtype=dtype, device=device)
        self.down = RowParallelLinear(f, h, bias=False, init_std=config.output_init_std, tp_group=tp_group,
                                      dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).unflatten(-1, (-1, 2)).unbind(-1)
        return self.down(F.silu(gate) * up)


class DecoderBlock(nn.Module):
    def __init__(self, config: ModelConfig, tp_group: Optional[dist.ProcessGroup] = None, dtype=None, device=None):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.input_norm = RMSNorm(h, eps, dtype=dtype, device=device)
        self.attention = GroupedQueryAttention(config, tp_group, dtype=dtype, device=device)
        self.post_attention_norm = RMSNorm(h, eps, dtype=dtype, device=device)
        self.mlp = SwiGLU(config, tp_group, dtype=dtype, device=device)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout)  # replicated activations: shared stream

    def forward(self, x: torch.Tensor, mask: AttentionMask, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        x = x + self.hidden_dropout(self.attention(self.input_norm(x), mask, cos, sin))
        return x + self.hidden_dropout(self.mlp(self.post_attention_norm(x)))

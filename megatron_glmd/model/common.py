"""What every model family's pipeline stage shares: the default layer split, the dtype names, and
how a stage prepares its micro-batch's attention mask (and compiles its layers)."""
from __future__ import annotations

from typing import Tuple

import torch

from .attention import AttentionMask, attention_path
from .compile import COMPILE_KWARGS, compile_layers_on

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def stage_layer_range(num_layers: int, pp_size: int, pp_rank: int) -> Tuple[int, int]:
    """Global layer indices ``[start, end)`` of a stage; earlier stages take the remainder."""
    if not 0 <= pp_rank < pp_size:
        raise ValueError(f"pipeline rank {pp_rank} outside [0, {pp_size})")
    if pp_size > num_layers:
        raise ValueError(f"pipeline-parallel size {pp_size} exceeds num_layers {num_layers}")
    base, extra = divmod(num_layers, pp_size)
    start = pp_rank * base + min(pp_rank, extra)
    return start, start + base + (1 if pp_rank < extra else 0)


def prepare_stage_attention(stage, mask: AttentionMask) -> AttentionMask:
    """Prepare this micro-batch's mask once for all of ``stage``'s layers, in the form the stage's
    attention path needs (flex unless attention dropout is drawn or, on the CPU, a gradient is
    needed: see .attention); compile the layers on the first call if ``model.compile`` says so for
    this device. ``stage`` has ``config``, ``layers``, ``training`` and ``_compile_decided``."""
    device_type = mask.length.device.type
    if not stage._compile_decided:
        stage._compile_decided = True
        if compile_layers_on(stage.config.compile, device_type):
            for layer in stage.layers.values():
                layer.compile(**COMPILE_KWARGS)
    dropout = stage.training and stage.config.attention_dropout > 0
    return mask.prepare(attention_path(stage.config.attention, dropout_active=dropout, device_type=device_type,
                                       needs_grad=torch.is_grad_enabled()))

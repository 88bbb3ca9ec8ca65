"""What every model family's pipeline stage shares: the stage's geometry and seeded init, decoding
with another output matrix, the layer loop with per-layer recompute, the default layer split, the
dtype names, and how a stage prepares its micro-batch's attention mask (and compiles its layers).
The families (:mod:`.glm`, :mod:`.decoder`) add only their embeddings, blocks and output layer."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..config import ModelConfig
from ..parallel.layers import initialize_parameters
from ..parallel.mappings import group_size
from ..parallel.random import checkpoint
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


class PipelineStage(nn.Module):
    """The part of a model held by pipeline stage ``pp_rank`` of ``pp_size`` on one TP rank: the
    family-independent half. Subclasses build ``self.layers`` (a ModuleDict keyed by global layer
    index), their embeddings and output layer, and define ``output_matrix``, ``embed`` and ``logits``."""

    def __init__(self, config: ModelConfig, tp_group: Optional[dist.ProcessGroup], pp_rank: int, pp_size: int,
                 layer_range: Optional[Tuple[int, int]]):
        super().__init__()
        config.validate(tp_size=group_size(tp_group), pp_size=pp_size)
        self.config = config
        self.tp_group = tp_group
        self.is_first = pp_rank == 0
        self.is_last = pp_rank == pp_size - 1
        self.layer_range = layer_range or stage_layer_range(config.num_layers, pp_size, pp_rank)
        self.padded_vocab_size = config.padded_vocab_size(group_size(tp_group))
        self._compile_decided = False     # model.compile is resolved on the device of the first batch

    def init_weights(self, seed: int) -> "PipelineStage":
        """Seeded init that depends only on (seed, global parameter name): TP- and PP-independent."""
        initialize_parameters(self.named_parameters(), seed)
        return self

    def decode_with(self, weight: torch.Tensor) -> None:
        """Decode with ``weight`` (this TP rank's rows of an output matrix, ``[rows, width]``) instead of
        the output layer: the teacher of a compressed run decodes with its sliced matrix ``W_vT[kept_ids]``
        (docs/design.md, "Vocabulary compression"). Held frozen in the model's dtype as a non-persistent
        buffer: moved with the model, never saved, never trained."""
        table = self.output_matrix() if self.is_last else None
        width = table.shape[1] if table is not None else "width"
        if table is None or weight.dim() != 2 or weight.shape[1] != table.shape[1]:
            raise ValueError(f"an output weight must be [rows, {width}] on the last stage, "
                             f"got {tuple(weight.shape)} on {'the last' if self.is_last else 'another'} stage")
        self.register_buffer("output_weight", weight.detach().to(device=table.device, dtype=table.dtype),
                             persistent=False)

    def decoding_matrix(self) -> torch.Tensor:
        """What :meth:`logits` multiplies by: the :meth:`decode_with` weight if set, else the output layer."""
        weight = getattr(self, "output_weight", None)
        return self.output_matrix() if weight is None else weight

    def run_layers(self, hidden: torch.Tensor, mask, *extra) -> torch.Tensor:
        """The stage's layers (each recomputed in backward under ``checkpoint_activations``), then the
        output layer on the last stage: hidden states or vocab-parallel logits ``[b, s, V/TP]``."""
        recompute = self.config.checkpoint_activations and self.training and torch.is_grad_enabled()
        for layer in self.layers.values():
            hidden = checkpoint(layer, hidden, mask, *extra) if recompute else layer(hidden, mask, *extra)
        return self.logits(hidden) if self.is_last else hidden

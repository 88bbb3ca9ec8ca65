"""GLM (docs/design.md, "The model") built for one pipeline stage; one implementation for teacher and student.

A stage owns a contiguous range of the transformer layers. The first stage also owns the word
and 2D position embeddings; the last stage owns the final LayerNorm and the output layer, tied
to the word embedding (on a multi-stage pipeline the last stage holds its own copy of the word
embedding, initialised identically; the training pipeline sums the two copies' gradients over the
grid's embedding group). The output is vocab-parallel logits ``[b, s, V_padded / TP]``, never
gathered.

With ``embedding_size`` E set ("+al", docs/design.md, "Vocabulary compression") the word
embedding is factorised ALBERT-style: a vocab-parallel ``V × E`` table, then a replicated ``E → h``
projection (no bias); the tied output layer runs through the same two factors, ``h → E`` by the
projection's transpose and then ``E → V/TP`` by the table. The projection is replicated rather
than split: it is small (E·h), and replicated it costs no communication in either direction.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..parallel.layers import VocabParallelEmbedding, initialize_parameters, mark_parameter
from ..parallel.mappings import copy_to_tp, group_size
from ..parallel.random import checkpoint
from .attention import AttentionMask, attention_path
from .compile import COMPILE_KWARGS, compile_layers_on
from .norm import layer_norm
from .transformer import GLMBlock

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


class GLMStage(nn.Module):
    """The part of a GLM held by pipeline stage ``pp_rank`` of ``pp_size`` on one TP rank."""

    def __init__(self, config: ModelConfig, *, tp_group: Optional[dist.ProcessGroup] = None,
                 pp_rank: int = 0, pp_size: int = 1, layer_range: Optional[Tuple[int, int]] = None,
                 device=None):
        super().__init__()
        config.validate(tp_size=group_size(tp_group), pp_size=pp_size)
        self.config = config
        self.tp_group = tp_group
        self.is_first = pp_rank == 0
        self.is_last = pp_rank == pp_size - 1
        self.layer_range = layer_range or stage_layer_range(config.num_layers, pp_size, pp_rank)
        dtype = TORCH_DTYPES[config.dtype]
        h = config.hidden_size
        self.padded_vocab_size = config.padded_vocab_size(group_size(tp_group))

        if self.is_first or self.is_last:
            width = config.embedding_size or h
            self.word_embeddings = VocabParallelEmbedding(self.padded_vocab_size, width, init_std=config.init_std,
                                                          tp_group=tp_group, dtype=dtype, device=device)
            if config.embedding_size:
                self.embedding_projection = nn.Linear(width, h, bias=False, dtype=dtype, device=device)
                mark_parameter(self.embedding_projection.weight, ("normal", config.init_std))
        if self.is_first:
            rows = config.max_sequence_length + 1
            self.position_embeddings = nn.Embedding(rows, h, dtype=dtype, device=device)
            self.block_position_embeddings = nn.Embedding(rows, h, dtype=dtype, device=device)
            for table in (self.position_embeddings, self.block_position_embeddings):
                mark_parameter(table.weight, ("normal", config.init_std))
            self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleDict({str(i): GLMBlock(config, tp_group, dtype=dtype, device=device)
                                     for i in range(*self.layer_range)})
        if self.is_last:
            self.final_layernorm = layer_norm(h, config.layernorm_epsilon, dtype=dtype, device=device)
        self._compile_decided = False     # model.compile is resolved on the device of the first batch

    def init_weights(self, seed: int) -> "GLMStage":
        """Seeded init that depends only on (seed, global parameter name): TP- and PP-independent."""
        initialize_parameters(self.named_parameters(), seed)
        return self

    def tied_embedding_parameters(self) -> List[nn.Parameter]:
        """The parameters that the first and the last stage both hold (the word embedding and, when
        factorised, its projection): a pipeline sums their gradients over the embedding group."""
        if not hasattr(self, "word_embeddings"):
            return []
        tied = [self.word_embeddings.weight]
        if self.config.embedding_size:
            tied.append(self.embedding_projection.weight)
        return tied

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Word + position + block-position embeddings; ``position_ids`` is ``[b, 2, s]``."""
        if position_ids.dim() != 3 or position_ids.shape[1] != 2:
            raise ValueError(f"position_ids must be [batch, 2, seq], got {tuple(position_ids.shape)}")
        words = self.word_embeddings(input_ids)
        if self.config.embedding_size:
            words = self.embedding_projection(words)
        hidden = (words + self.position_embeddings(position_ids[:, 0])
                  + self.block_position_embeddings(position_ids[:, 1]))
        return self.embedding_dropout(hidden)

    def decode_with(self, weight: torch.Tensor) -> None:
        """Decode with ``weight`` (this TP rank's rows of an output matrix, ``[rows, width]``) instead of
        the tied word embedding: the teacher of a compressed run decodes with its sliced matrix
        ``W_vT[kept_ids]`` (docs/design.md, "Vocabulary compression"). Held frozen in the model's dtype
        as a non-persistent buffer: moved with the model, never saved, never trained."""
        table = self.word_embeddings.weight
        if not self.is_last or weight.dim() != 2 or weight.shape[1] != table.shape[1]:
            raise ValueError(f"an output weight must be [rows, {table.shape[1]}] on the last stage, "
                             f"got {tuple(weight.shape)} on {'the last' if self.is_last else 'another'} stage")
        self.register_buffer("output_weight", weight.detach().to(device=table.device, dtype=table.dtype),
                             persistent=False)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and the output layer (tied, unless :meth:`decode_with` replaced it):
        vocab-parallel logits ``[b, s, V/TP]``."""
        hidden = self.final_layernorm(hidden)
        if self.config.embedding_size:
            hidden = F.linear(hidden, self.embedding_projection.weight.t())   # h -> E through the tied factor
        weight = getattr(self, "output_weight", None)
        return F.linear(copy_to_tp(hidden, self.tp_group), self.word_embeddings.weight if weight is None else weight)

    def attention_mask(self, mask: AttentionMask) -> AttentionMask:
        """Prepare this micro-batch's mask once for all of the stage's layers, in the form the
        stage's attention path needs (flex unless attention dropout is drawn or, on the CPU, a
        gradient is needed: see .attention);
        compile the layers on the first call if ``model.compile`` says so for this device."""
        device_type = mask.length.device.type
        if not self._compile_decided:
            self._compile_decided = True
            if compile_layers_on(self.config.compile, device_type):
                for layer in self.layers.values():
                    layer.compile(**COMPILE_KWARGS)
        dropout = self.training and self.config.attention_dropout > 0
        return mask.prepare(attention_path(self.config.attention, dropout_active=dropout, device_type=device_type,
                                           needs_grad=torch.is_grad_enabled()))

    def forward(self, inputs: torch.Tensor, position_ids: Optional[torch.Tensor], sep: torch.Tensor,
                length: torch.Tensor) -> torch.Tensor:
        """First stage: ``inputs`` are token ids ``[b, s]``; other stages: hidden states ``[b, s, h]``.
        Returns hidden states, or vocab-parallel logits on the last stage."""
        hidden = self.embed(inputs, position_ids) if self.is_first else inputs
        mask = self.attention_mask(AttentionMask.glm(sep, length, hidden.shape[1]))
        recompute = self.config.checkpoint_activations and self.training and torch.is_grad_enabled()
        for layer in self.layers.values():
            hidden = checkpoint(layer, hidden, mask) if recompute else layer(hidden, mask)
        return self.logits(hidden) if self.is_last else hidden

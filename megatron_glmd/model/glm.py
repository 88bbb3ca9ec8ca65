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
from ..parallel.layers import VocabParallelEmbedding, mark_parameter
from ..parallel.mappings import copy_to_tp
from .attention import AttentionMask
from .common import TORCH_DTYPES, PipelineStage, prepare_stage_attention, stage_layer_range  # noqa: F401 - re-exported
from .norm import layer_norm
from .glm_layers import GLMBlock


class GLMStage(PipelineStage):
    """The part of a GLM held by pipeline stage ``pp_rank`` of ``pp_size`` on one TP rank."""

    def __init__(self, config: ModelConfig, *, tp_group: Optional[dist.ProcessGroup] = None,
                 pp_rank: int = 0, pp_size: int = 1, layer_range: Optional[Tuple[int, int]] = None,
                 device=None):
        super().__init__(config, tp_group, pp_rank, pp_size, layer_range)
        dtype = TORCH_DTYPES[config.dtype]
        h = config.hidden_size

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

    def output_matrix(self) -> torch.Tensor:
        """This TP rank's rows of the tied output layer, the word embedding ``[V_padded / TP, E or h]``."""
        return self.word_embeddings.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and the output layer (tied, unless :meth:`decode_with` replaced it):
        vocab-parallel logits ``[b, s, V/TP]``."""
        hidden = self.final_layernorm(hidden)
        if self.config.embedding_size:
            hidden = F.linear(hidden, self.embedding_projection.weight.t())   # h -> E through the tied factor
        return F.linear(copy_to_tp(hidden, self.tp_group), self.decoding_matrix())

    def attention_mask(self, mask: AttentionMask) -> AttentionMask:
        """This micro-batch's mask, prepared once for all of the stage's layers (and the layers
        compiled on the first call if ``model.compile`` says so): :func:`.common.prepare_stage_attention`."""
        return prepare_stage_attention(self, mask)

    def forward(self, inputs: torch.Tensor, position_ids: Optional[torch.Tensor], sep: torch.Tensor,
                length: torch.Tensor) -> torch.Tensor:
        """First stage: ``inputs`` are token ids ``[b, s]``; other stages: hidden states ``[b, s, h]``.
        Returns hidden states, or vocab-parallel logits on the last stage."""
        hidden = self.embed(inputs, position_ids) if self.is_first else inputs
        return self.run_layers(hidden, self.attention_mask(AttentionMask.glm(sep, length, hidden.shape[1])))

"""The decoder family (Llama / Qwen2 / Mistral; docs/design.md, "The decoder family") built for one
pipeline stage, with GLMStage's public surface so that the engine drives both the same way.

The first stage owns the word embedding (vocab-parallel, no position table: positions enter every
layer through rotary embeddings); the last stage owns the final RMSNorm and the output layer:
``lm_head`` (vocab-parallel, ``[V_padded / TP, h]``), or with ``tie_word_embeddings`` the word
embedding itself, of which a multi-stage pipeline's last stage holds a copy (summed gradients over
the embedding group, as for GLM). The output is vocab-parallel logits ``[b, s, V_padded / TP]``.

Inputs of every stage: ``position_ids [b, s]`` (restarting at 0 where a packed document starts;
they drive the rotary angles and, through those restarts, the document-causal mask) and
``length [b]`` (tokens before the padding).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..parallel.layers import VocabParallelEmbedding, mark_parameter
from ..parallel.mappings import copy_to_tp, group_size
from .attention import AttentionMask
from .common import TORCH_DTYPES, PipelineStage, prepare_stage_attention
from .decoder_layers import DecoderBlock
from .norm import RMSNorm
from .rope import inverse_frequencies, rotary_cos_sin


class DecoderStage(PipelineStage):
    """The part of a decoder-family model held by pipeline stage ``pp_rank`` of ``pp_size`` on one TP rank."""

    def __init__(self, config: ModelConfig, *, tp_group: Optional[dist.ProcessGroup] = None,
                 pp_rank: int = 0, pp_size: int = 1, layer_range: Optional[Tuple[int, int]] = None,
                 device=None):
        if not config.is_decoder:
            raise ValueError(f"DecoderStage needs architecture 'decoder', got {config.architecture!r}")
        super().__init__(config, tp_group, pp_rank, pp_size, layer_range)
        tp = group_size(tp_group)
        dtype = TORCH_DTYPES[config.dtype]
        h = config.hidden_size
        if self.is_first or (self.is_last and config.tie_word_embeddings):
            self.word_embeddings = VocabParallelEmbedding(self.padded_vocab_size, h, init_std=config.init_std,
                                                          tp_group=tp_group, dtype=dtype, device=device)
        if self.is_first:
            self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleDict({str(i): DecoderBlock(config, tp_group, dtype=dtype, device=device)
                                     for i in range(*self.layer_range)})
        if self.is_last:
            self.final_norm = RMSNorm(h, config.rms_norm_eps, dtype=dtype, device=device)
            if not config.tie_word_embeddings:
                self.lm_head = nn.Parameter(torch.empty(self.padded_vocab_size // tp, h, dtype=dtype, device=device))
                mark_parameter(self.lm_head, ("normal", config.init_std), shard_dim=0, tp_group=tp_group)
        # fp32 rotary frequencies, from the config (never saved), one copy per device; not a buffer,
        # so that casting the module to bf16 cannot round them.
        self._inv_freq = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        if device not in self._inv_freq:
            self._inv_freq[device] = inverse_frequencies(self.config.head_dim, self.config.rope_theta,
                                                         self.config.rope_scaling).to(device)
        return self._inv_freq[device]

    def tied_embedding_parameters(self) -> List[nn.Parameter]:
        """The word embedding when the first and the last stage both hold it (a tied output layer);
        a pipeline sums its gradients over the embedding group. Untied: none."""
        if not hasattr(self, "word_embeddings") or not self.config.tie_word_embeddings:
            return []
        return [self.word_embeddings.weight]

    def output_matrix(self) -> torch.Tensor:
        """This TP rank's rows of the output layer ``[V_padded / TP, h]`` (the teacher's W_vT to slice)."""
        return self.word_embeddings.weight if self.config.tie_word_embeddings else self.lm_head

    def embed(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Word embeddings ``[b, s, h]`` (positions are applied inside every layer)."""
        return self.embedding_dropout(self.word_embeddings(input_ids))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final RMSNorm and the output layer: vocab-parallel logits ``[b, s, V/TP]``."""
        return F.linear(copy_to_tp(self.final_norm(hidden), self.tp_group), self.decoding_matrix())

    def attention_mask(self, position_ids: torch.Tensor, length: torch.Tensor) -> AttentionMask:
        """Causal within each document (a document starts where ``position_ids`` is 0), padding
        hidden; prepared once for all of the stage's layers (:func:`.common.prepare_stage_attention`)."""
        document = torch.cumsum((position_ids == 0).to(torch.int32), dim=1)
        return prepare_stage_attention(self, AttentionMask.causal(length, position_ids.shape[1], document))

    def forward(self, inputs: torch.Tensor, position_ids: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """First stage: ``inputs`` are token ids ``[b, s]``; other stages: hidden states ``[b, s, h]``.
        Returns hidden states, or vocab-parallel logits on the last stage."""
        if position_ids.dim() != 2 or position_ids.shape != inputs.shape[:2]:
            raise ValueError(f"position_ids must be [batch, seq] = {tuple(inputs.shape[:2])}, "
                             f"got {tuple(position_ids.shape)}")
        hidden = self.embed(inputs) if self.is_first else inputs
        mask = self.attention_mask(position_ids, length)
        cos, sin = rotary_cos_sin(position_ids, self.inv_freq(position_ids.device), hidden.dtype)
        return self.run_layers(hidden, mask, cos, sin)

"""Activation-memory estimates for one GPU of a pipeline stage, from the config alone.

Bytes assume 16-bit activations (bf16/fp16), 1-byte dropout masks, tensor parallelism ``t``
without sequence parallelism (LayerNorm inputs and residuals are replicated on every TP rank),
and materialised attention scores, so they are an upper bound when SDPA picks a fused kernel.
Symbols: s sequence, b micro-batch, h hidden, a heads, V padded vocabulary, L_k layers of stage
k, p stages, m micro-batches per DP replica per step.

Full activations of one transformer layer (Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", §4.1, 34·sbh + 5·a·s²·b split over TP)::

    A_layer = s·b·h·(10 + 24/t + 5·a·s/(h·t))

A decoder layer (grouped-query attention, ``kv_r`` KV heads of width d computed per TP rank, SwiGLU
of width f; no dropout masks when dropout is off, counted anyway as an upper bound) keeps its two
RMSNorm inputs and the inputs of Q|K|V and of the MLP (replicated, 2·4 bytes per h), two dropout
masks (2 bytes per h), Q and the attention context (2·2·h/t), K and V after rotation (2·2·kv_r·d),
gate, up, SiLU(gate) and their product (4·2·f/t), and the scores as GLM::

    A_layer = s·b·(10·h + 4·h/t + 4·kv_r·d + 8·f/t + 5·a·s/t)

Student, stage k, 1F1B schedule: stage k holds n_k = min(p − k, m) micro-batches in flight
(warm-up depth). Per in-flight micro-batch it keeps, with per-layer checkpointing, each layer's
input (the only tensor a checkpoint saves), the boolean attention mask the checkpoints share,
and the pipeline buffers of that micro-batch (the stage's student output until its gradient
returns, the teacher's hidden state received and sent, both 16-bit)::

    held_k    = n_k · (2·s·b·h·L_k + s²·b + 2·s·b·h + 2·2·s·b·h_T)        (checkpointing)
    held_k    = n_k · (A_layer·L_k + s²·b + 2·s·b·h + 2·2·s·b·h_T)        (no checkpointing)
    working   = A_layer + 2·2·s·b·h       one layer recomputed for its backward, plus the
                                          gradients flowing in and out of it
    last stage: + 2·2·s·b·V/t             student logits and their gradient (the fused loss
                                          writes the gradient once, no fp32 copy)

Teacher (forward only, ``no_grad``, nothing kept between micro-batches beyond the pipeline
buffers counted above): the peak inside one layer's forward::

    T = s·b·(2·h_T + 2·h_T + 6·h_T/t + 4·a_T·s/t + 2·h_T/t + 16·h_T/t)
        (input, LayerNorm output, QKV, scores + probabilities, context, MLP 4h before and after GeLU)
    last stage: + 2·s·b·V/t               the teacher's logits, alive until the loss has run
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..config import ModelConfig
from .common import stage_layer_range

BYTES_16BIT = 2


def layer_activation_bytes(config: ModelConfig, seq: int, micro_batch: int, tp: int) -> float:
    """A_layer: everything one layer keeps for its backward pass, per TP rank."""
    s, b, h, a = seq, micro_batch, config.hidden_size, config.num_attention_heads
    if config.is_decoder:
        kv_width = config.local_kv_heads(tp) * config.head_dim
        return s * b * (10 * h + 4 * h / tp + 4 * kv_width + 8 * config.ffn_size / tp + 5 * a * s / tp)
    return s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))


def in_flight_micro_batches(pp: int, pp_rank: int, num_micro_batches: int) -> int:
    """Micro-batches whose activations stage ``pp_rank`` holds at once under 1F1B."""
    return min(pp - pp_rank, num_micro_batches)


def student_activation_bytes(config: ModelConfig, seq: int, micro_batch: int, tp: int, pp: int, pp_rank: int,
                             num_micro_batches: int, checkpoint: bool,
                             teacher_hidden: Optional[int] = None,
                             layer_range: Optional[Tuple[int, int]] = None) -> float:
    """Peak student activations of one GPU of stage ``pp_rank`` (formula in the module docstring).

    ``teacher_hidden``: the co-located teacher's hidden size, whose state shares the pipeline buffers.
    ``layer_range``: the stage's student layers (default the even split of ``stage_layer_range``).
    """
    s, b, h = seq, micro_batch, config.hidden_size
    start, end = layer_range or stage_layer_range(config.num_layers, pp, pp_rank)
    a_layer = layer_activation_bytes(config, seq, micro_batch, tp)
    per_layer = BYTES_16BIT * s * b * h if checkpoint else a_layer
    boundary = BYTES_16BIT * s * b * h + 2 * BYTES_16BIT * s * b * (teacher_hidden or 0)
    held = in_flight_micro_batches(pp, pp_rank, num_micro_batches) * ((end - start) * per_layer + s * s * b
                                                                       + boundary)
    working = (a_layer if checkpoint else 0) + 2 * BYTES_16BIT * s * b * h
    if pp_rank == pp - 1:
        working += 2 * BYTES_16BIT * s * b * config.padded_vocab_size(tp) // tp
    return held + working


def teacher_forward_bytes(config: ModelConfig, seq: int, micro_batch: int, tp: int, last_stage: bool) -> float:
    """Transient peak of the teacher's forward pass in one layer (plus its logits on the last stage)."""
    s, b, h, a = seq, micro_batch, config.hidden_size, config.num_attention_heads
    if config.is_decoder:   # input, norm output, Q, K|V, scores + probabilities, context, gate|up, SiLU·up
        kv_width = config.local_kv_heads(tp) * config.head_dim
        peak = s * b * (4 * h + (2 + 2) * h / tp + 4 * kv_width + 4 * a * s / tp + (4 + 2) * config.ffn_size / tp)
    else:
        peak = s * b * (4 * h + (6 + 2 + 16) * h / tp + 4 * a * s / tp)
    if last_stage:
        peak += BYTES_16BIT * s * b * config.padded_vocab_size(tp) // tp
    return peak

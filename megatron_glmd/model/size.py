"""Parameter counts and training-memory estimates of a GLM or decoder layout, from the config alone.

The counts mirror the shapes :class:`~megatron_glmd.model.GLMStage` and
:class:`~megatron_glmd.model.DecoderStage` build (tests check them against built models), so large
presets can be sized without allocating them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..config import ModelConfig
from .common import stage_layer_range

GiB = 1024 ** 3
BYTES_BF16_WEIGHT = 2
BYTES_BF16_GRAD = 2
BYTES_FP32_MASTER_AND_ADAM = 12  # fp32 master weights + Adam first and second moments


def decoder_layer_parameter_count(config: ModelConfig, tp_size: int = 1) -> int:
    """Q, K|V (a 1/TP share, or all KV heads replicated when TP does not divide them), output
    projection, SwiGLU (gate, up, down), two RMSNorms; biases on Q, K, V with ``qkv_bias``."""
    h, f, t, d = config.hidden_size, config.ffn_size, tp_size, config.head_dim
    kv = config.num_key_value_heads
    q_rows = config.num_attention_heads * d // t
    kv_rows = 2 * d * (kv // t if kv % t == 0 else kv)
    bias = q_rows + kv_rows if config.qkv_bias else 0
    return (q_rows + kv_rows) * h + bias + h * q_rows + 3 * h * (f // t) + 2 * h


def layer_parameter_count(config: ModelConfig, tp_size: int = 1) -> int:
    if config.is_decoder:
        return decoder_layer_parameter_count(config, tp_size)
    h, f, t = config.hidden_size, config.ffn_size, tp_size
    qkv = 3 * h // t * h + 3 * h // t
    dense = h * (h // t) + h
    mlp = f // t * h + f // t + h * (f // t) + h
    layernorms = 4 * h
    return qkv + dense + mlp + layernorms


def stage_parameter_count(config: ModelConfig, tp_size: int, pp_size: int, pp_rank: int,
                          layer_range: Optional[Tuple[int, int]] = None) -> int:
    """Parameters held by one TP rank of pipeline stage ``pp_rank`` (every TP rank holds the same).

    ``layer_range``: the stage's layers ``[start, end)`` (e.g. from :mod:`.partition`); default the
    even split of :func:`~.glm.stage_layer_range`.
    """
    h = config.hidden_size
    start, end = layer_range or stage_layer_range(config.num_layers, pp_size, pp_rank)
    count = (end - start) * layer_parameter_count(config, tp_size)
    if config.is_decoder:   # no position tables; a final RMSNorm; the head tied (copied when PP > 1) or not
        table = config.padded_vocab_size(tp_size) // tp_size * h
        if pp_rank == 0:
            count += table
        if pp_rank == pp_size - 1:
            count += h + (table if not config.tie_word_embeddings or pp_size > 1 else 0)
        return count
    # The vocab-parallel table, V/TP × h, or V/TP × E and the replicated E → h projection (+al).
    width = config.embedding_size or h
    word_embeddings = config.padded_vocab_size(tp_size) // tp_size * width
    if config.embedding_size:
        word_embeddings += width * h
    if pp_rank == 0:
        count += word_embeddings + 2 * (config.max_sequence_length + 1) * h
    if pp_rank == pp_size - 1:
        count += 2 * h + (word_embeddings if pp_size > 1 else 0)
    return count


def total_parameter_count(config: ModelConfig) -> int:
    """Unique parameters of the whole model (TP = PP = 1, vocabulary padded to 128)."""
    return stage_parameter_count(config, 1, 1, 0)


@dataclass
class StageMemory:
    pp_rank: int
    layers: tuple
    params: int
    weights_bytes: int
    grads_bytes: int
    optimizer_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.grads_bytes + self.optimizer_bytes


def training_memory(config: ModelConfig, tp_size: int, pp_size: int, dp_size: int,
                    layer_ranges: Optional[Sequence[Tuple[int, int]]] = None) -> List[StageMemory]:
    """Per-GPU bytes of bf16 weights and gradients and ZeRO-1-sharded fp32 master + Adam states.

    ``layer_ranges``: each stage's layers (default the even split). Activations are not included:
    they depend on micro-batch, sequence and recompute settings.
    """
    config.validate(tp_size=tp_size, pp_size=pp_size)
    if dp_size < 1:
        raise ValueError(f"dp_size must be >= 1, got {dp_size}")
    if layer_ranges is not None and len(layer_ranges) != pp_size:
        raise ValueError(f"{len(layer_ranges)} layer ranges for {pp_size} pipeline stages")
    stages = []
    for k in range(pp_size):
        layers = (tuple(layer_ranges[k]) if layer_ranges is not None
                  else stage_layer_range(config.num_layers, pp_size, k))
        n = stage_parameter_count(config, tp_size, pp_size, k, layers)
        stages.append(StageMemory(pp_rank=k, layers=layers, params=n,
                                  weights_bytes=n * BYTES_BF16_WEIGHT, grads_bytes=n * BYTES_BF16_GRAD,
                                  optimizer_bytes=-(-n * BYTES_FP32_MASTER_AND_ADAM // dp_size)))
    return stages

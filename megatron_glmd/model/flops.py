"""Matmul FLOPs per token of GLM and the decoder family: one layer, the logits, a training step, one
pipeline stage.

Only matrix multiplications are counted, 2 FLOPs per multiply-add (Narayanan et al. 2021,
"Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", appendix).
Per token, with h hidden, f the MLP width, s the sequence length, V the padded vocabulary:

    one layer, forward   2·3h² (QKV) + 2·s·h (scores) + 2·s·h (probabilities × values)
                         + 2·h² (attention output) + 2·2·h·f (MLP)  =  8h² + 4hf + 4sh
                         (= 24h² + 4sh for f = 4h)
    logits, forward      2·h·V     (tied output layer; padded columns are computed too)
                         2·h·E + 2·E·V with a factorised embedding of width E (``embedding_size``,
                         "+al"), whose E → h projection also costs 2·E·h in the first stage's embedding

A decoder layer (grouped-query attention with ``kv`` heads of width ``d``, SwiGLU of width f) is

    one layer, forward   2·h·h (Q) + 2·h·2·kv·d (K, V) + 4·s·h (scores, values) + 2·h·h (output)
                         + 2·3·h·f (gate, up, down)  =  4h² + 4h·kv·d + 6hf + 4sh

with the scores counted over all s keys as for GLM (a fused causal kernel skips about half of them).
Its logits cost 2·h·V, tied or not. A replicated KV head (TP a multiple of kv) is computed once per
rank, which the per-token totals here (all TP ranks together) count once.

Norms, GeLU/SiLU, rotary embeddings, softmax, dropout, the embedding look-ups and the loss are elementwise and not
counted. A backward pass costs twice its forward. Per-layer activation checkpointing runs each
student transformer layer's forward once more during backward (the embeddings and the logits
are not recomputed). The teacher runs forward only.

Two totals per token, as in Megatron-LM's reporting: **model FLOPs** (student forward + backward,
teacher forward: what the run must compute) and **hardware FLOPs** (model FLOPs + recompute: what
the GPUs execute). MFU divides the first by time × peak, HFU the second.

Values are exact integers, so that layer partitions compare costs without rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..config import ModelConfig

BACKWARD_FACTOR = 2   # a backward pass: gradients of the inputs and of the weights


def layer_forward_flops(config: ModelConfig, seq_length: int) -> int:
    """Forward matmul FLOPs of one transformer layer per token: 8h² + 4hf + 4sh (GLM),
    4h² + 4h·kv·d + 6hf + 4sh (decoder)."""
    h, f = config.hidden_size, config.ffn_size
    if config.is_decoder:
        return 4 * h * h + 4 * h * config.num_key_value_heads * config.head_dim + 6 * h * f + 4 * seq_length * h
    return 8 * h * h + 4 * h * f + 4 * seq_length * h


def logits_flops(config: ModelConfig, tp: int = 1) -> int:
    """Forward FLOPs of the output layer per token: 2·h·V with V padded for ``tp`` ranks (all shards);
    2·h·E + 2·E·V through a factorised embedding of width E."""
    e = config.embedding_size
    if e:
        return 2 * config.hidden_size * e + 2 * e * config.padded_vocab_size(tp)
    return 2 * config.hidden_size * config.padded_vocab_size(tp)


def embedding_flops(config: ModelConfig) -> int:
    """Forward FLOPs of the embedding per token: look-ups (none), or the E → h projection (2·E·h)."""
    return 2 * config.embedding_size * config.hidden_size if config.embedding_size else 0


def forward_flops_per_token(config: ModelConfig, seq_length: int, tp: int = 1) -> int:
    """One forward pass of the whole model per token: the embedding, every layer and the logits."""
    return (embedding_flops(config) + config.num_layers * layer_forward_flops(config, seq_length)
            + logits_flops(config, tp))


def student_layer_training_flops(config: ModelConfig, seq_length: int, recompute: bool) -> int:
    """Forward + backward (+ the recomputed forward) of one student layer per token."""
    return (1 + BACKWARD_FACTOR + (1 if recompute else 0)) * layer_forward_flops(config, seq_length)


def training_flops_per_token(student: ModelConfig, teacher: Optional[ModelConfig], seq_length: int,
                             recompute: bool, tp: int = 1) -> int:
    """Student forward + backward [+ each layer's recomputed forward] and the teacher's forward.

    ``recompute=False`` gives the model FLOPs of a step (for MFU), ``recompute=True`` with the run's
    checkpointing gives its hardware FLOPs (for HFU).
    """
    flops = (1 + BACKWARD_FACTOR) * forward_flops_per_token(student, seq_length, tp)
    if recompute:
        flops += student.num_layers * layer_forward_flops(student, seq_length)
    if teacher is not None:
        flops += forward_flops_per_token(teacher, seq_length, tp)
    return flops


def first_stage_extra_flops(student: ModelConfig, teacher: Optional[ModelConfig]) -> int:
    """What the first stage computes beyond its layers: the embeddings (only a factorised one costs)."""
    return (1 + BACKWARD_FACTOR) * embedding_flops(student) + (embedding_flops(teacher) if teacher else 0)


def last_stage_extra_flops(student: ModelConfig, teacher: Optional[ModelConfig], tp: int = 1) -> int:
    """What the last stage computes beyond its layers: student logits forward + backward, teacher logits."""
    extra = (1 + BACKWARD_FACTOR) * logits_flops(student, tp)
    if teacher is not None:
        extra += logits_flops(teacher, tp)
    return extra


@dataclass(frozen=True)
class StageFlops:
    """Hardware FLOPs per token of one pipeline stage (all its TP ranks together)."""

    student: int      # its student layers' forward + backward (+ recompute), the logits on the last stage
    teacher: int      # its teacher layers' forward, the teacher's logits on the last stage
    recompute: int    # the part of ``student`` that is recomputation (0 without checkpointing)

    @property
    def total(self) -> int:
        return self.student + self.teacher

    @property
    def model(self) -> int:
        """Without recomputation: the stage's share of the model FLOPs."""
        return self.total - self.recompute


def stage_flops(student: ModelConfig, teacher: Optional[ModelConfig], student_layers: Tuple[int, int],
                teacher_layers: Optional[Tuple[int, int]], *, last: bool, seq_length: int, recompute: bool,
                tp: int = 1, first: bool = False) -> StageFlops:
    """Per-token FLOPs of a stage holding ``student_layers`` and ``teacher_layers`` (``[start, end)``).

    The first stage's embeddings are look-ups (no matmul FLOPs unless factorised); the last stage
    adds both models' logits (the student's forward and backward, the teacher's forward).
    """
    n_s = student_layers[1] - student_layers[0]
    s_flops = n_s * student_layer_training_flops(student, seq_length, recompute)
    redo = n_s * layer_forward_flops(student, seq_length) if recompute else 0
    t_flops = 0
    if teacher is not None and teacher_layers is not None:
        t_flops = (teacher_layers[1] - teacher_layers[0]) * layer_forward_flops(teacher, seq_length)
    if first:
        s_flops += (1 + BACKWARD_FACTOR) * embedding_flops(student)
        t_flops += embedding_flops(teacher) if teacher is not None else 0
    if last:
        s_flops += (1 + BACKWARD_FACTOR) * logits_flops(student, tp)
        if teacher is not None:
            t_flops += logits_flops(teacher, tp)
    return StageFlops(student=s_flops, teacher=t_flops, recompute=redo)

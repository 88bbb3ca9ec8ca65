"""Per-GPU memory of one pipeline stage: model state (:mod:`.deepspeed_state`, from DeepSpeed's
source), activations (:mod:`megatron_glmd.model.activation_memory`), for the stage's own layers.

Student, per trained parameter n on the GPU and DP size d: bf16 8 + 12/d bytes (bf16 weights and
gradients, fp32 accumulated gradients; fp32 master + Adam sharded by ZeRO-1), fp16/fp32
2b + 12/d with b the dtype's bytes, plus stage 1's gradient bucket. The teacher holds weights only,
in the run's precision.

The peak is the larger of two phases: the 1F1B schedule (model state + activations) and the DP
reduction after it (model state + the reduction's transient buffers), since the pipeline engine
has dropped every micro-batch's activations by then (``_exec_backward_pass`` sets the outputs to
None, ``runtime/pipe/engine.py`` l. 865-866; ``_exec_send_grads`` the inputs, l. 1111).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from ..config import ModelConfig, RunConfig
from ..model.activation_memory import student_activation_bytes, teacher_forward_bytes
from ..model.partition import StageLayers
from ..model.size import stage_parameter_count
from .deepspeed_state import DTYPE_BYTES, dp_transient_bytes, optimizer_state

GiB = 1024 ** 3


def stage_vector_parameter_count(config: ModelConfig, tp: int, last: bool, layers: Tuple[int, int]) -> int:
    """1-D parameters of one TP rank of a stage: the optimizer's no-decay group (``engine/optim.py``
    ``param_groups``: every tensor of fewer than 2 dimensions).

    GLM, per layer: 3h/t (QKV bias) + h (attention output bias) + f/t + h (MLP biases) + 4h (two
    LayerNorms); the final LayerNorm (2h) on the last stage.
    Decoder, per layer: 2h (two RMSNorm weights) and, with ``qkv_bias`` (Qwen2), the Q bias a·d/t and
    the K|V bias 2·kv·d/t (all 2·kv·d where the KV heads are replicated: TP does not divide kv); no
    other biases; the final RMSNorm (h) on the last stage. The word table and ``lm_head`` are matrices.
    """
    h, f, n = config.hidden_size, config.ffn_size, layers[1] - layers[0]
    if config.is_decoder:
        per_layer = 2 * h
        if config.qkv_bias:
            kv = config.num_key_value_heads
            stored_kv = kv // tp if kv % tp == 0 else kv
            per_layer += (config.num_attention_heads // tp + 2 * stored_kv) * config.head_dim
        return n * per_layer + (h if last else 0)
    per_layer = 3 * h // tp + h + f // tp + h + 4 * h
    return n * per_layer + (2 * h if last else 0)


@dataclass(frozen=True)
class StageMemory:
    student_params: int           # per GPU (one TP rank)
    teacher_params: int
    student_weights_grads: int    # bytes per GPU: weights, gradients, fp32 accumulator (bf16)
    grad_bucket: int              # fp16/fp32: stage 1's gradient bucket, held through backward
    optimizer: int                # fp32 master + Adam moments, sharded over DP
    teacher_weights: int
    student_activations: float
    teacher_activations: float
    dp_transient: int             # alive only during the DP reduction and step

    @property
    def state_bytes(self) -> int:
        return self.student_weights_grads + self.grad_bucket + self.optimizer + self.teacher_weights

    @property
    def activation_bytes(self) -> float:
        return self.student_activations + self.teacher_activations

    @property
    def total_bytes(self) -> float:
        """The peak: model state + the larger of the 1F1B activations and the DP reduction's transient."""
        return self.state_bytes + max(self.activation_bytes, self.dp_transient)


def stage_memory(cfg: RunConfig, teacher: Optional[ModelConfig], layers: StageLayers, pp_rank: int,
                 dp: int, recompute: bool) -> StageMemory:
    """``recompute``: the run's per-layer activation checkpointing, resolved (``train.checkpoint_activations``
    may say ``auto``; :mod:`.checkpointing` decides)."""
    student, t = cfg.model, cfg.train
    tp, pp = cfg.parallel.tp, cfg.parallel.pp
    state = optimizer_state(t.precision)
    n = stage_parameter_count(student, tp, pp, pp_rank, layers.student)
    vectors = stage_vector_parameter_count(student, tp, pp_rank == pp - 1, layers.student)
    n_teacher = stage_parameter_count(teacher, tp, pp, pp_rank, layers.teacher) if teacher is not None else 0
    act_scale = DTYPE_BYTES[t.precision] // 2    # the activation formulas count 16-bit values
    seq, mb = cfg.data.seq_length, t.micro_batch_size
    return StageMemory(
        student_params=n, teacher_params=n_teacher, student_weights_grads=state.weights_grads * n,
        grad_bucket=state.grad_bucket_bytes(), optimizer=-(-state.sharded * n // dp),
        teacher_weights=n_teacher * DTYPE_BYTES[t.precision],
        student_activations=act_scale * student_activation_bytes(
            student, seq, mb, tp, pp, pp_rank, t.accumulation_steps(dp), recompute,
            teacher_hidden=teacher.hidden_size if teacher is not None else None, layer_range=layers.student),
        teacher_activations=act_scale * teacher_forward_bytes(teacher, seq, mb, tp, pp_rank == pp - 1)
        if teacher is not None else 0.0,
        dp_transient=dp_transient_bytes(t.precision, (n - vectors, vectors), dp))

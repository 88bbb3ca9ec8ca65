"""Per-GPU memory of one pipeline stage: model state (:mod:`megatron_glmd.model.size`) and
activations (:mod:`megatron_glmd.model.activation_memory`), for the stage's own layer ranges.

16-bit runs: bf16/fp16 weights and gradients (bf16 gradients accumulated in fp32, as the trainer's
DeepSpeed configuration sets), fp32 master weights + Adam moments sharded over DP (ZeRO-1).
fp32 runs: the weights are their own master copy; Adam adds two fp32 moments sharded over DP.
The teacher holds weights only, in the run's precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import ModelConfig, RunConfig
from ..model.activation_memory import student_activation_bytes, teacher_forward_bytes
from ..model.partition import StageLayers
from ..model.size import BYTES_BF16_GRAD, BYTES_BF16_WEIGHT, BYTES_FP32_MASTER_AND_ADAM, stage_parameter_count

GiB = 1024 ** 3
BYTES_FP32 = 4
FP32_ADAM_STATES = 8  # fp32 training: the weights are the master copy, Adam adds two moments


@dataclass(frozen=True)
class StageMemory:
    student_params: int           # per GPU (one TP rank)
    teacher_params: int
    student_weights_grads: int    # bytes per GPU
    optimizer: int
    teacher_weights: int
    student_activations: float
    teacher_activations: float

    @property
    def total_bytes(self) -> float:
        return (self.student_weights_grads + self.optimizer + self.teacher_weights + self.student_activations
                + self.teacher_activations)


def stage_memory(cfg: RunConfig, teacher: Optional[ModelConfig], layers: StageLayers, pp_rank: int,
                 dp: int) -> StageMemory:
    student, t = cfg.model, cfg.train
    tp, pp = cfg.parallel.tp, cfg.parallel.pp
    sixteen_bit = t.precision in ("bf16", "fp16")
    n = stage_parameter_count(student, tp, pp, pp_rank, layers.student)
    if sixteen_bit:
        weights_grads = (BYTES_BF16_WEIGHT + BYTES_BF16_GRAD) * n
        optimizer = -(-BYTES_FP32_MASTER_AND_ADAM * n // dp)
        if t.precision == "bf16":  # the trainer accumulates bf16 gradients in fp32 (grad_accum_dtype)
            weights_grads += (BYTES_FP32 - BYTES_BF16_GRAD) * n
    else:
        weights_grads, optimizer = 2 * BYTES_FP32 * n, -(-FP32_ADAM_STATES * n // dp)
    n_teacher = stage_parameter_count(teacher, tp, pp, pp_rank, layers.teacher) if teacher is not None else 0
    act_scale = 1 if sixteen_bit else 2    # the activation formulas count 16-bit values
    seq, mb = cfg.data.seq_length, t.micro_batch_size
    return StageMemory(
        student_params=n, teacher_params=n_teacher, student_weights_grads=weights_grads, optimizer=optimizer,
        teacher_weights=n_teacher * (BYTES_BF16_WEIGHT if sixteen_bit else BYTES_FP32),
        student_activations=act_scale * student_activation_bytes(
            student, seq, mb, tp, pp, pp_rank, t.accumulation_steps(dp), t.checkpoint_activations,
            teacher_hidden=teacher.hidden_size if teacher is not None else None, layer_range=layers.student),
        teacher_activations=act_scale * teacher_forward_bytes(teacher, seq, mb, tp, pp_rank == pp - 1)
        if teacher is not None else 0.0)

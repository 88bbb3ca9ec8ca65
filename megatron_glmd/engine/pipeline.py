"""Teacher and student in one DeepSpeed pipeline: stage k holds both models' slice k.

Each pipeline stage is one :class:`DistillStage` layer of a :class:`GLMDPipeline` (a
``deepspeed.pipe.PipelineModule`` partitioned one layer per stage). A stage runs its slice of the
student and, in ``distill`` mode, its slice of the co-located teacher: forward only, in eval
mode, under ``no_grad``, keeping no activations. The teacher is deliberately *not* a registered
submodule, so DeepSpeed never puts it in the optimizer, never converts or broadcasts it and never
writes it into the student's checkpoints.

What crosses a stage boundary (DeepSpeed sends every tensor of the tuple and expects a gradient
back for every floating-point one):

    first stage in:  input_ids, position_ids, sep, length (a compressed run maps the student's ids
                     through the artifact's table here; the teacher's stay unmapped, see
                     :mod:`.vocab_compression`)
    between stages:  student hidden (float, gets a gradient), teacher hidden viewed as uint8 bytes
                     (no gradient), sep, length
    last stage out:  student logits [, teacher logits]        → loss_fn(outputs, labels)

The decoder family (``model.architecture: decoder``) has no ``sep``; every stage needs the
positions instead (its rotary angles and its document mask read them), so they travel in sep's
place: first stage in ``input_ids, position_ids, length``, between stages ``student hidden, teacher
bits, position_ids, length`` (int64, which NCCL carries). Teacher and student share the family.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import ModelConfig
from ..model.build import build_stage
from ..model.partition import StageLayers
from ..parallel.grid import ParallelGrid
from ..distill.intermediate import AddAuxiliaryGradient, IntermediateLayerLoss, stage_pairs
from .quiet import deepspeed_prints
from ..model.attention_mask import valid_token_mask

# DeepSpeed wants a gradient back for every floating-point tensor a stage receives, so the frozen
# teacher's hidden state travels as a non-floating view of the same bytes. uint8 is the one integer
# type NCCL carries that every float dtype can be viewed as (NCCL has no 16-bit integer: an int16
# view of bf16 passes on gloo and fails at the first GPU send); the last dimension grows by the
# float's width in bytes.
_WIRE_DTYPE = torch.uint8


class DistillStage(nn.Module):
    """Pipeline stage ``pp_rank``: the student's slice, and (distill mode) the frozen teacher's slice."""

    def __init__(self, pp_rank: int, student_config: ModelConfig, grid: ParallelGrid, layers: StageLayers,
                 teacher_config: Optional[ModelConfig] = None, intermediate_loss: bool = False,
                 compression=None):
        super().__init__()
        self.pp_rank = pp_rank
        self.is_first = pp_rank == 0
        self.is_last = pp_rank == grid.pp_size - 1
        self.decoder = student_config.is_decoder
        self.student = build_stage(student_config, tp_group=grid.tp_group, pp_rank=pp_rank, pp_size=grid.pp_size,
                                   layer_range=layers.student)
        teacher = None
        if teacher_config is not None:
            if teacher_config.architecture != student_config.architecture:
                raise ValueError(f"teacher architecture {teacher_config.architecture!r} differs from the "
                                 f"student's {student_config.architecture!r}")
            teacher = build_stage(teacher_config, tp_group=grid.tp_group, pp_rank=pp_rank, pp_size=grid.pp_size,
                                  layer_range=layers.teacher)
            teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # unregistered on purpose, see module docstring
        if compression is not None and self.is_first:
            # original id -> student row ([v], int64): moved to the engine's device with the stage, never saved
            self.register_buffer("student_ids", compression.student_ids(), persistent=False)
        if compression is not None and self.is_last and teacher is not None:
            teacher.decode_with(compression.teacher_output_shard(grid.tp_rank, grid.tp_size))
        self.intermediate = None
        self.intermediate_sums = []      # detached per-micro-batch sums, collected by the engine
        self.intermediate_scale = 0.0    # gradient of the summed loss, set by the engine per step
        if intermediate_loss:
            pairs = stage_pairs(student_config, teacher_config, layers)
            self.intermediate = IntermediateLayerLoss(self.student, teacher, pairs) if pairs else None

    def teacher_to(self, device) -> None:
        """DeepSpeed moves the registered student; the unregistered teacher is moved here."""
        if self.teacher is not None:
            self.teacher.to(device=device)

    def forward(self, inputs: Tuple[torch.Tensor, ...]):
        # ``extra``: GLM's sep (its mask); a decoder's position_ids (every stage needs them).
        if self.is_first:
            if self.decoder:
                input_ids, position_ids, length = inputs
                extra = position_ids
            else:
                input_ids, position_ids, extra, length = inputs
            student_ids = getattr(self, "student_ids", None)
            student_in = input_ids if student_ids is None else student_ids[input_ids]
            teacher_in = input_ids
        else:
            student_in, teacher_bits, extra, length = inputs
            position_ids = extra if self.decoder else None
            teacher_in = _from_bits(teacher_bits, self.teacher) if self.teacher is not None else None
        model_args = (position_ids, length) if self.decoder else (position_ids, extra, length)
        student_out = self.student(student_in, *model_args)
        teacher_out = None
        if self.teacher is not None:
            self.teacher.eval()
            with torch.no_grad():
                teacher_out = self.teacher(teacher_in, *model_args)
        if self.intermediate is not None and self.training and torch.is_grad_enabled():
            aux = self.intermediate.loss_sum(valid_token_mask(length, student_out.shape[1]).float())
            self.intermediate_sums.append(aux.detach())
            student_out = AddAuxiliaryGradient.apply(student_out, aux, self.intermediate_scale)
        if self.is_last:
            return (student_out,) if teacher_out is None else (student_out, teacher_out)
        teacher_bits = (teacher_out.contiguous().view(_WIRE_DTYPE) if teacher_out is not None
                        else torch.zeros(1, dtype=_WIRE_DTYPE, device=student_out.device))
        return student_out, teacher_bits, extra, length


def _from_bits(bits: torch.Tensor, teacher: nn.Module) -> torch.Tensor:
    """Undo the byte view of the teacher's hidden state (its dtype is the teacher's parameter dtype)."""
    dtype = next(teacher.parameters()).dtype
    return bits.view(dtype)


def build_pipeline(student_config: ModelConfig, grid: ParallelGrid, partition: Sequence[StageLayers],
                   loss_fn: Callable, teacher_config: Optional[ModelConfig] = None, intermediate_loss: bool = False,
                   compression=None):
    """A ``GLMDPipeline`` with one :class:`DistillStage` per pipeline stage (only the local one is built);
    ``partition`` gives each stage's layers (:func:`megatron_glmd.model.partition.run_partition`);
    ``compression``: the run's vocabulary-compression artifact, or None."""
    from deepspeed.pipe import LayerSpec, PipelineModule
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    class GLMDPipeline(PipelineModule):
        """PipelineModule whose first and last stage tie the student's word embedding."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if grid.pp_size > 1 and grid.is_last_stage:
                # The last stage's copies of the tied parameters count once, on the first stage, in
                # DeepSpeed's gradient norm (its own TiedLayerSpec marks copies the same way).
                for param in self.local_stage.student.tied_embedding_parameters():
                    param.ds_pipe_replicated = True

        def get_tied_weights_and_groups(self):
            tied = super().get_tied_weights_and_groups()
            if grid.pp_size > 1 and (grid.is_first_stage or grid.is_last_stage):
                # The word embedding (and a factorised embedding's projection): gradients summed
                # over the first and last stage, so both copies stay equal.
                tied += [(p, grid.embedding_group) for p in self.local_stage.student.tied_embedding_parameters()]
            return tied

        @property
        def local_stage(self) -> DistillStage:
            return self.forward_funcs[0]

    topology = PipeModelDataParallelTopology(num_pp=grid.pp_size, num_mp=grid.tp_size, num_dp=grid.dp_size)
    specs = [LayerSpec(DistillStage, k, student_config, grid, partition[k], teacher_config, intermediate_loss,
                       compression) for k in range(grid.pp_size)]
    with deepspeed_prints():     # PipelineModule prints its seed settings, topology and partition on rank 0
        return GLMDPipeline(layers=specs, topology=topology, loss_fn=loss_fn, partition_method="uniform",
                            activation_checkpoint_interval=0)

"""Kernel launches per transformer layer: the host side of a stage's time.

At micro-batch 1 and sequence 512 a student layer's kernels are small, and the host may take
longer to issue them (Python, PyTorch's dispatcher and autograd, ``cudaLaunchKernel``) than the GPU
takes to run them; then the stage is launch-bound and its GPU idles between kernels. :mod:`.cost`
charges a stage per micro-batch ``launches × --launch-us`` of host time and takes the larger of
that and its GPU time.

THE COUNTS BELOW ARE NOT MEASURED HERE. They come from issue 15, item 4: "at micro-batch 1 and
sequence 512 one student layer is about 91 kernel launches (forward, recompute, backward)". The
split into a forward of 23 and a backward of 45 (23 + 23 + 45 = 91) assumes a backward issues
about twice its forward's kernels. A teacher layer runs the same forward (under ``no_grad``).
Replace :data:`EAGER` (and add the compiled counts, ``model.compile``) with the per-layer operator
counts measured by ``megatron_glmd/model/op_count.py`` when they land; this module is the one
place the planner reads them from.

The decoder family's counts (:data:`DECODER_EAGER`, :data:`DECODER_EAGER_DROPOUT`) ARE measured, on
the CPU, by ``count_layer_ops`` (``tools/benchmarks/decoder_layer_ops.py``, saved in
``tools/benchmarks/results/decoder_layer_ops_cpu.json``): the innermost compute operators of one
eager ``DecoderBlock`` at micro-batch 1, the CPU's proxy for the kernels a GPU would launch, the
same at the tiny decoder's shape and at llama-3.2-1b's. A decoder layer issues more of them than
GLM's (the same tool counts 17 + 17 + 23 for a GLM layer without dropout): RMSNorm is five
elementwise operators where LayerNorm is one, the rotary embedding of Q and K about a dozen, and
SwiGLU splits gate and up. Not yet measured on a GPU (fused SDPA/flash kernels may differ by a few).
The teacher runs its layers in eval (no dropout) under ``no_grad``: the forward count without
dropout.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..config import ModelConfig


@dataclass(frozen=True)
class LayerLaunches:
    """Kernel launches of one transformer layer per micro-batch."""

    forward: int
    backward: int
    recompute: Optional[int] = None        # the recomputed forward (default: ``forward``)
    teacher_forward: Optional[int] = None  # a teacher layer's forward, eval (default: ``forward``)

    def student(self, recompute: bool) -> int:
        """Forward, backward and, under per-layer checkpointing, the recomputed forward."""
        again = self.forward if self.recompute is None else self.recompute
        return self.forward + (again if recompute else 0) + self.backward

    def teacher(self) -> int:
        return self.forward if self.teacher_forward is None else self.teacher_forward


EAGER = LayerLaunches(forward=23, backward=45)   # issue 15's ~91 (forward + recompute + backward), split 1:1:2
# Measured (module docstring): a decoder layer without dropout (Llama/Qwen presets), and with it.
DECODER_EAGER = LayerLaunches(forward=40, recompute=41, backward=59)
DECODER_EAGER_DROPOUT = LayerLaunches(forward=59, recompute=61, backward=69, teacher_forward=40)
DECODER_QKV_BIAS_BACKWARD = 2    # measured: 61 backward with Qwen2's Q/K/V biases, 59 without


def layer_launches(student: ModelConfig) -> LayerLaunches:
    """The counts of the run's model family (teacher and student are of one family)."""
    if not student.is_decoder:
        return EAGER
    dropout = student.hidden_dropout > 0 or student.attention_dropout > 0
    counts = DECODER_EAGER_DROPOUT if dropout else DECODER_EAGER
    if student.qkv_bias:      # the Q and K|V bias gradients: one reduction each in backward
        counts = dataclasses.replace(counts, backward=counts.backward + DECODER_QKV_BIAS_BACKWARD)
    return counts

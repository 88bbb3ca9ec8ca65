"""Kernel launches per transformer layer: the host side of a stage's time.

At micro-batch 1 and sequence 512 a student layer's kernels are small, and the host may take
longer to issue them (Python, PyTorch's dispatcher and autograd, ``cudaLaunchKernel``) than the GPU
takes to run them; then the stage is launch-bound and its GPU idles between kernels. :mod:`.cost`
charges a stage per micro-batch ``launches × --launch-us`` of host time and takes the larger of
that and its GPU time.

The counts are MEASURED, on the CPU, by ``megatron_glmd/model/op_count.py``'s ``count_layer_ops``
(``tools/benchmarks/decoder_layer_ops.py``, saved in
``tools/benchmarks/results/decoder_layer_ops_cpu.json``): the innermost compute operators of one
layer at micro-batch 1, forward / recomputed forward / backward, eager and compiled the way
``model.compile: on`` compiles a layer (inductor's fused kernels counted one each). They are the
CPU's proxy for the kernels a GPU launches; they leave out the TP collectives (charged by
:mod:`.cost` separately) and are not yet measured on a GPU (fused SDPA/flash kernels may differ by a
few). The count does not depend on the layer's size (the tiny decoder and llama-3.2-1b count alike).
A teacher layer runs in eval (no dropout) under ``no_grad``: the forward without dropout.

A GPU run compiles its layers when ``model.compile`` resolves on for CUDA (:func:`..model.compile
.compile_layers_on`: ``auto`` does), so the planner charges the compiled counts there. A decoder
layer issues more eager kernels than GLM's (RMSNorm is five elementwise operators where LayerNorm
is one, the rotary embedding of Q and K about a dozen, SwiGLU splits gate and up); compiled, the
two families are within a few kernels of each other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..config import ModelConfig
from ..model.compile import compile_layers_on


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


# (family, dropout drawn, compiled) -> counts (module docstring). Eager counts do not depend on the
# layer's shape; compiled ones may by a kernel or two (inductor fuses by shape), so GLM's compiled
# counts are those of a GLM-2B layer at 1 x 512 (tools/benchmarks/results/layer_compile_cpu.json; the
# tiny layer counted 10-11 / 13-14 / 17-19 without dropout in two runs), the decoder's those of the tiny decoder.
COUNTS = {
    ("glm", False, False): LayerLaunches(forward=17, recompute=17, backward=23),
    ("glm", True, False): LayerLaunches(forward=34, recompute=36, backward=30, teacher_forward=17),
    ("glm", False, True): LayerLaunches(forward=11, recompute=14, backward=20),
    ("glm", True, True): LayerLaunches(forward=33, recompute=36, backward=27, teacher_forward=11),
    ("decoder", False, False): LayerLaunches(forward=40, recompute=41, backward=59),
    ("decoder", True, False): LayerLaunches(forward=59, recompute=61, backward=69, teacher_forward=40),
    ("decoder", False, True): LayerLaunches(forward=11, recompute=14, backward=21),
    ("decoder", True, True): LayerLaunches(forward=36, recompute=39, backward=30, teacher_forward=11),
}
DECODER_EAGER = COUNTS["decoder", False, False]
DECODER_QKV_BIAS_BACKWARD = 2    # measured, eager: 61 backward with Qwen2's Q/K/V biases, 59 without


def layer_launches(student: ModelConfig, compiled: Optional[bool] = None) -> LayerLaunches:
    """The counts of the run's model family (teacher and student are of one family) on a GPU:
    compiled where ``model.compile`` resolves on for CUDA, unless ``compiled`` says otherwise."""
    if compiled is None:
        compiled = compile_layers_on(student.compile, "cuda")
    dropout = student.hidden_dropout > 0 or student.attention_dropout > 0
    counts = COUNTS["decoder" if student.is_decoder else "glm", dropout, compiled]
    if student.is_decoder and student.qkv_bias and not compiled:   # Q and K|V bias gradients: one reduction each
        counts = dataclasses.replace(counts, backward=counts.backward + DECODER_QKV_BIAS_BACKWARD)
    return counts

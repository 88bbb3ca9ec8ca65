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
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerLaunches:
    """Kernel launches of one transformer layer per micro-batch."""

    forward: int
    backward: int

    def student(self, recompute: bool) -> int:
        """Forward, backward and, under per-layer checkpointing, the recomputed forward."""
        return self.forward * (2 if recompute else 1) + self.backward

    def teacher(self) -> int:
        return self.forward


EAGER = LayerLaunches(forward=23, backward=45)   # issue 15's ~91 (forward + recompute + backward), split 1:1:2

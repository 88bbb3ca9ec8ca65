"""``model.compile``: compile each transformer layer with ``torch.compile`` ("regional" compilation).

Every layer of a stage (teacher and student alike) runs the same ``GLMBlock.forward`` code on
parameters of the same shapes, so dynamo traces and inductor compiles it once and the other
layers reuse the code (parameters are graph inputs, not constants); the stage's embedding,
head, mask building, activation checkpointing and pipeline plumbing stay eager. ``auto`` compiles
on CUDA, where a layer of the 40-GPU plan is launch-bound and compiling cuts its kernels, and not
on the CPU, where compiled steps measured slower than eager and the first step costs 16 s
(docs/design.md, "Compiled layers": tools/benchmarks/bench_layer_compile.py).
"""
from __future__ import annotations

from ..config.model import COMPILE_SETTINGS
from .attention import describe_attention

# Static shapes (a run's micro-batch and sequence are fixed); ``fallback_random``: dropout inside a
# compiled layer draws from torch's generator through the eager operators, so a compiled layer
# drops exactly what the eager one drops (equal losses, recompute replays) instead of drawing
# from inductor's own Philox stream.
COMPILE_KWARGS = {"dynamic": False, "options": {"fallback_random": True}}


def compile_layers_on(setting: str, device_type: str) -> bool:
    """Whether a stage compiles its layers for ``model.compile = setting`` on ``device_type``."""
    if setting not in COMPILE_SETTINGS:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_SETTINGS)}, got {setting!r}")
    if setting == "auto":
        return device_type == "cuda"
    return setting == "on"


def describe_kernels(config, device_type: str) -> str:
    """The run's log line: which attention path training and evaluation take, and whether the
    layers are compiled (``config`` is a ModelConfig; the teacher takes the run's settings)."""
    layers = "compiled" if compile_layers_on(config.compile, device_type) else "eager"
    return (f"{describe_attention(config.attention, config.attention_dropout, device_type)}; "
            f"layers {layers} (model.compile {config.compile})")



def kernels_note(run_config, device_type: str) -> str:
    """:func:`describe_kernels` for a run's log (``run_config`` a RunConfig) when it set
    ``model.attention`` or ``model.compile`` explicitly (flex may fall back to SDPA) or
    ``logging.verbose``; "" for a run on ``auto`` (it stays quiet)."""
    model = run_config.model
    explicit = model.attention != "auto" or model.compile != "auto"
    return describe_kernels(model, device_type) if run_config.logging.verbose or explicit else ""

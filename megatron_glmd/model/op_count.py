"""Kernels per transformer layer, counted under ``torch.profiler``: forward, recompute, backward.

The planner's launch-overhead term multiplies this count by a per-launch CPU cost; a stage of
few small layers (micro-batch 1, sequence 512) can be bound by launches rather than FLOPs.

What counts as a kernel: on CUDA, every GPU activity the profiler records (kernels, memcpy,
memset). On the CPU, the innermost compute operators: an ``aten::`` event counts when it is not a
view, allocation or metadata operator and none of its descendants counts, and every kernel that
inductor generated counts (compiled with ``cpp.enable_kernel_profile`` so that each appears as an
event). This is the CPU's proxy for launches: eager GPU code launches about one kernel per such
operator, a compiled graph one per generated kernel plus one per library call (GEMMs, attention).
The layer is counted alone at TP = 1; at TP > 1 add the TP collectives (two all-reduces forward,
two backward, and two again in a recompute; a decoder layer three backward: Q, K|V and gate|up).
A decoder-family config counts a :class:`DecoderBlock` under its causal mask with the rotary
``cos``/``sin`` given (computed once per stage, not per layer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch.profiler import ProfilerActivity, profile

from ..config import ModelConfig
from ..parallel.random import TP_RNG, checkpoint, get_rng_tracker
from .attention import AttentionMask, attention_path
from .compile import COMPILE_KWARGS
from .decoder_layers import DecoderBlock
from .glm import TORCH_DTYPES
from .rope import inverse_frequencies, rotary_cos_sin
from .glm_layers import GLMBlock

# aten operators that launch no kernel of their own: views, metadata, allocation.
NON_KERNEL_OPS = frozenset(f"aten::{name}" for name in (
    "empty", "empty_like", "empty_strided", "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided",
    "transpose", "t", "permute", "expand", "expand_as", "unsqueeze", "squeeze", "select", "slice", "unbind",
    "split", "split_with_sizes", "chunk", "narrow", "detach", "detach_", "alias", "resolve_conj", "resolve_neg",
    "contiguous", "lift_fresh", "flatten", "view_as", "numpy_T", "_nested_tensor_from_mask", "set_",
    "is_nonzero", "result_type", "to", "_to_copy_meta", "stride", "size", "dim", "ones_like_meta"))


@dataclass(frozen=True)
class LayerOps:
    forward: int
    recompute: int
    backward: int

    @property
    def total(self) -> int:
        """Kernels of one training micro-batch through the layer (recompute included if counted)."""
        return self.forward + self.recompute + self.backward


def _is_inductor_kernel(name: str) -> bool:
    return "cpp_fused" in name or name.startswith(("triton_", "cpp_kernel")) or "_cpp_fused_" in name


def _cpu_kernels(event) -> int:
    inner = sum(_cpu_kernels(child) for child in event.cpu_children)
    if inner:
        return inner
    if _is_inductor_kernel(event.name):
        return 1
    return int(event.name.startswith("aten::") and event.name not in NON_KERNEL_OPS)


def _count(fn, device_type: str) -> int:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device_type == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device_type == "cuda":
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(_cpu_kernels(e) for e in events if e.cpu_parent is None)


def count_layer_ops(config: ModelConfig, *, seq_length: int, micro_batch: int = 1, compiled: bool = False,
                    device: str = "cpu", compile_options: Optional[dict] = None) -> LayerOps:
    """Kernels of one :class:`GLMBlock` (or :class:`DecoderBlock`, by ``config.architecture``) of ``config`` (its dtype, dropouts and attention setting) at
    ``micro_batch x seq_length``, training, eager or compiled as by ``model.compile: on``.

    ``recompute`` is what per-layer activation checkpointing adds to the backward pass;
    ``compile_options`` override inductor options of ``model.compile`` (e.g. ``fallback_random``).
    Global RNG state (torch's and the TP tracker's) is restored afterwards.
    """
    device_type = torch.device(device).type
    tracker = get_rng_tracker()
    saved_tracker = tracker.get_states()
    with torch.random.fork_rng(devices=[device] if device_type == "cuda" else []):
        if TP_RNG not in tracker.states:
            tracker.add(TP_RNG, 0)
        try:
            return _count_layer(config, seq_length, micro_batch, compiled, device, device_type, compile_options or {})
        finally:
            tracker.set_states(saved_tracker)


def _count_layer(config, seq_length, micro_batch, compiled, device, device_type, compile_options) -> LayerOps:
    dtype = TORCH_DTYPES[config.dtype]
    block = DecoderBlock if config.is_decoder else GLMBlock
    layer = block(config, None, dtype=dtype, device=device).train()
    if compiled:
        options = {**COMPILE_KWARGS["options"], **compile_options, "cpp.enable_kernel_profile": True}
        layer.compile(**{**COMPILE_KWARGS, "options": options})
    sep = torch.full((micro_batch,), seq_length // 2, device=device)
    length = torch.full((micro_batch,), seq_length, device=device)
    path = attention_path(config.attention, dropout_active=config.attention_dropout > 0, device_type=device_type,
                          needs_grad=True)
    if config.is_decoder:
        mask = AttentionMask.causal(length, seq_length).prepare(path)
        positions = torch.arange(seq_length, device=device).expand(micro_batch, seq_length)
        extra = rotary_cos_sin(positions, inverse_frequencies(config.head_dim, config.rope_theta,
                                                              config.rope_scaling).to(device), dtype)
    else:
        mask, extra = AttentionMask.glm(sep, length, seq_length).prepare(path), ()
    x = torch.randn(micro_batch, seq_length, config.hidden_size, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)

    def fresh():
        layer.zero_grad(set_to_none=True)
        x.grad = None

    outputs = {}

    def forward(recompute: bool):
        outputs["y"] = checkpoint(layer, x, mask, *extra) if recompute else layer(x, mask, *extra)

    def backward():
        outputs.pop("y").backward(grad)

    for recompute in (False, True, False, True):      # warm-up: compile, autotune, allocator
        fresh(), forward(recompute), backward()
    fresh()
    fwd = _count(lambda: forward(False), device_type)
    bwd = _count(backward, device_type)
    fresh()
    forward(True)
    bwd_with_recompute = _count(backward, device_type)
    return LayerOps(forward=fwd, recompute=bwd_with_recompute - bwd, backward=bwd)

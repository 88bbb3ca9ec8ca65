"""RNG for tensor parallelism: per-TP-rank streams inside TP regions, one stream elsewhere.

Dropout on activations that are split across TP ranks (attention probabilities of a rank's
heads) must differ per TP rank; dropout on replicated activations (after a row-parallel
reduce) must be identical on all TP ranks. The default torch generator carries the shared
stream; :class:`RNGStatesTracker` keeps the per-rank stream and swaps it in under ``fork()``.
Activation checkpointing restores both when it recomputes (:func:`checkpoint`).
"""
from __future__ import annotations

import contextlib
from typing import Dict

import torch
import torch.utils.checkpoint

TP_RNG = "tensor-parallel-rng"
_TP_SEED_OFFSET = 2718
_PP_SEED_STRIDE = 100


def _device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _get_state(device_type: str) -> torch.Tensor:
    return torch.cuda.get_rng_state() if device_type == "cuda" else torch.get_rng_state()


def _set_state(device_type: str, state: torch.Tensor) -> None:
    if device_type == "cuda":
        torch.cuda.set_rng_state(state)
    else:
        torch.set_rng_state(state)


class RNGStatesTracker:
    """Named generator states of the compute device (CUDA when available, else CPU)."""

    def __init__(self, device_type: str | None = None):
        self.device_type = device_type or _device_type()
        self.states: Dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.states = {}

    def add(self, name: str, seed: int) -> None:
        if name in self.states:
            raise ValueError(f"RNG state {name!r} already exists")
        saved = _get_state(self.device_type)
        if self.device_type == "cuda":
            torch.cuda.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        self.states[name] = _get_state(self.device_type)
        _set_state(self.device_type, saved)

    def get_states(self) -> Dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.states.items()}

    def set_states(self, states: Dict[str, torch.Tensor]) -> None:
        self.states = {k: v.clone() for k, v in states.items()}

    @contextlib.contextmanager
    def fork(self, name: str = TP_RNG):
        """Run the block on generator stream ``name``; the default stream is untouched."""
        if name not in self.states:
            raise KeyError(f"RNG state {name!r} was never added; call model_parallel_seed() first")
        saved = _get_state(self.device_type)
        _set_state(self.device_type, self.states[name])
        try:
            yield
        finally:
            self.states[name] = _get_state(self.device_type)
            _set_state(self.device_type, saved)


_TRACKER = RNGStatesTracker()


def get_rng_tracker() -> RNGStatesTracker:
    """The process-wide tracker (RNG state is process-global in torch, so is this)."""
    return _TRACKER


def model_parallel_seed(seed: int, tp_rank: int = 0, pp_rank: int = 0) -> None:
    """Seed the shared stream (same on all TP ranks of a stage) and this TP rank's own stream."""
    default_seed = seed + _PP_SEED_STRIDE * pp_rank
    torch.manual_seed(default_seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(default_seed)
    _TRACKER.device_type = _device_type()
    _TRACKER.reset()
    _TRACKER.add(TP_RNG, default_seed + _TP_SEED_OFFSET + tp_rank)


def checkpoint(function, *args):
    """Activation checkpointing that replays the same dropout masks on recompute.

    torch's non-reentrant checkpoint restores the default CPU/CUDA generators; the context pair
    below additionally rewinds the tracker's per-TP-rank streams to where they were in forward.
    """
    tracker = get_rng_tracker()
    forward_states = tracker.get_states()

    @contextlib.contextmanager
    def recompute_context():
        current = tracker.get_states()
        tracker.set_states(forward_states)
        try:
            yield
        finally:
            tracker.set_states(current)

    return torch.utils.checkpoint.checkpoint(
        function, *args, use_reentrant=False, preserve_rng_state=True,
        context_fn=lambda: (contextlib.nullcontext(), recompute_context()))

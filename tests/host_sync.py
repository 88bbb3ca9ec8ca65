"""Fail on any operation that makes the host wait for the device, inside a pipeline's micro-batch.

On a GPU, an operation whose result the host needs (a tensor read as a Python number, a shape that
depends on the values: boolean-mask indexing, ``nonzero``, ``unique``...) stalls the CPU until every
queued kernel has run; the pipeline's next launches, sends and receives wait with it. On the CPU
nothing stalls, so such an operation cannot be seen by timing: this guard sees it by what it is.

:class:`NoHostSync` is a ``TorchDispatchMode`` (every aten operation, forward and autograd backward
alike, passes through it) plus a ``TorchFunctionMode`` (``Tensor.tolist``/``numpy`` read the data
without dispatching an operation). :func:`guard_micro_batches` activates both only inside what a
pipeline engine runs per micro-batch: its ForwardPass and BackwardPass instructions (the stage
module's forward, the loss function, autograd's backward, and DeepSpeed's code around them, where
a device ``synchronize()`` is refused too); DeepSpeed's once-per-step bookkeeping (loss
aggregation, gradient reduction, gradient norm, the optimizer step) and the trainer's per-step
syncs stay outside.
"""
from __future__ import annotations

import contextlib
import os
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operations that need a value on the host (their output shape depends on the data, or they return
# a Python scalar). Composite operations (``item``, ``where(cond)``, ``masked_select``'s decomposition,
# ``Tensor.__bool__``) reach the dispatcher as one of these.
_SYNC_PACKETS = [getattr(aten, name) for name in (
    "_local_scalar_dense", "is_nonzero", "nonzero", "nonzero_numpy", "argwhere", "masked_select",
    "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive",
    "bincount", "equal", "masked_scatter", "histc") if hasattr(aten, name)]
# Indexing operations: a boolean (or uint8) index is a mask, and a mask index is a nonzero.
_INDEX_PACKETS = [getattr(aten, name) for name in ("index", "index_put", "index_put_", "_index_put_impl_",
                                                     "_unsafe_index", "_unsafe_index_put")
                  if hasattr(aten, name)]
_HOST_READS = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__}


class HostSyncError(AssertionError):
    """An operation that needs a device value on the host ran inside a micro-batch."""


def _where() -> str:
    """The innermost frames of the project's own code (and the kernels') that issued the operation."""
    frames = [f for f in traceback.extract_stack()[:-3]
              if any(part in f.filename for part in (f"{os.sep}megatron_glmd{os.sep}", f"{os.sep}kernels{os.sep}"))]
    return "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.line}" for f in frames[-3:]) or "(no project frame)"


def sync_reason(func, args, kwargs) -> str:
    """Why ``func(*args, **kwargs)`` forces a host synchronisation, or "" if it does not."""
    packet = func.overloadpacket
    if packet in _SYNC_PACKETS:
        return func.name()
    if packet is getattr(aten, "repeat_interleave", None) and func._overloadname != "self_int" \
            and kwargs.get("output_size") is None:
        return f"{func.name()} without output_size"
    if packet in _INDEX_PACKETS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        for index in indices or ():
            if isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8):
                return f"{func.name()} with a boolean mask index"
    if packet in (aten._to_copy, aten.copy_):
        src = args[1] if packet is aten.copy_ else args[0]
        dst_device = args[0].device if packet is aten.copy_ else kwargs.get("device")
        if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst_device is not None \
                and torch.device(dst_device).type == "cpu":
            return f"{func.name()} from {src.device} to the host"
    return ""


class _DispatchGuard(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = sync_reason(func, args, kwargs)
        if reason:
            raise HostSyncError(f"host synchronisation inside a micro-batch: {reason} at {_where()}")
        return func(*args, **kwargs)


class _FunctionGuard(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            raise HostSyncError(f"host synchronisation inside a micro-batch: Tensor.{func.__name__} at {_where()}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_host_sync():
    """Within the block, every host-synchronising operation raises :class:`HostSyncError`."""
    with _FunctionGuard(), _DispatchGuard():
        yield


class SynchronizeGuard:
    """``synchronize()`` of DeepSpeed's accelerator and of torch.cuda: no aten operation, so no mode
    sees it; the guard wraps the callables themselves."""

    def __init__(self):
        from deepspeed.accelerator import get_accelerator

        self.targets = [(get_accelerator(), "synchronize"), (torch.cuda, "synchronize")]

    def __enter__(self):
        self.saved = [getattr(obj, name) for obj, name in self.targets]

        def refuse(*args, **kwargs):
            raise HostSyncError(f"host synchronisation inside a micro-batch: a device synchronize() at {_where()}")

        for obj, name in self.targets:
            setattr(obj, name, refuse)

    def __exit__(self, *exc):
        for (obj, name), saved in zip(self.targets, self.saved):
            setattr(obj, name, saved)


def _guarded(instruction):
    def run(engine, **kwargs):
        with SynchronizeGuard(), no_host_sync():
            return instruction(engine, **kwargs)
    return run


@contextlib.contextmanager
def guard_micro_batches(trainer):
    """Guard what the trainer's pipeline engine runs per micro-batch: its ForwardPass and BackwardPass
    instructions (the stage's forward, the loss function, autograd's backward, and DeepSpeed's own code
    around them) run under :func:`no_host_sync` and with device ``synchronize()`` refused, within the
    block. The step's other instructions (loading a micro-batch, the gradient reduction, the optimizer
    step) and everything outside ``train_batch``/``eval_batch`` run as they are."""
    from deepspeed.runtime.pipe import schedule

    engine = trainer.engine
    instructions = dict(type(engine)._INSTRUCTION_MAP)
    for kind in (schedule.ForwardPass, schedule.BackwardPass):
        instructions[kind] = _guarded(instructions[kind])
    engine._INSTRUCTION_MAP = instructions      # the engine looks its instructions up on itself
    try:
        yield
    finally:
        del engine._INSTRUCTION_MAP

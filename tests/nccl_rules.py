"""NCCL's rules, enforced on gloo: a test that passes here must not fail on the first GPU step.

gloo accepts tensors that NCCL refuses. NCCL carries only int8, uint8, int32, uint32, int64,
uint64, fp16, bf16, fp32, fp64 and fp8 (no 16-bit integers, no bool, no complex), and a group
created with the ``nccl`` backend serves tensors on the CUDA device only. :func:`enforce_nccl_rules`
wraps every collective and point-to-point call of ``torch.distributed`` (which DeepSpeed's
communication layer and its pipeline engine call through) and raises :class:`NCCLRuleViolation`
naming the call, the tensor's dtype and its device, before the call runs.

The device rule is checked against ``device_type``: "cpu" on the CPU (where it cannot fail: every
tensor is a CPU tensor) and "cuda" when the same harness runs on a GPU machine.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch
import torch.distributed as dist

NCCL_DTYPES = frozenset(
    [torch.int8, torch.uint8, torch.int32, torch.uint32, torch.int64, torch.uint64, torch.float16, torch.bfloat16,
     torch.float32, torch.float64]
    + [getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)])

# Calls whose tensor arguments NCCL moves. Object collectives (broadcast_object_list, ...) serialise
# into uint8 tensors on the group's device and are covered by the device rule of their callers.
COMMUNICATION_CALLS = ("all_reduce", "all_reduce_coalesced", "all_gather", "all_gather_into_tensor",
                       "all_gather_coalesced", "reduce_scatter", "reduce_scatter_tensor", "broadcast", "reduce",
                       "send", "recv", "isend", "irecv", "all_to_all", "all_to_all_single", "gather", "scatter",
                       "batch_isend_irecv")


class NCCLRuleViolation(AssertionError):
    """A collective or point-to-point call that gloo runs and NCCL would refuse."""


def _tensors(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dist.P2POp):
        yield value.tensor


def check_call(name: str, args, kwargs, device_type: str) -> None:
    """Raise NCCLRuleViolation if any tensor of this call breaks NCCL's dtype or device rule."""
    for tensor in _tensors(list(args) + list(kwargs.values())):
        if tensor.dtype not in NCCL_DTYPES:
            raise NCCLRuleViolation(f"torch.distributed.{name} got a {tensor.dtype} tensor of shape "
                                    f"{tuple(tensor.shape)}: NCCL carries no {tensor.dtype}")
        if tensor.device.type != device_type:
            raise NCCLRuleViolation(f"torch.distributed.{name} got a tensor on {tensor.device}, the engine's "
                                    f"devices are {device_type}: an nccl group serves CUDA tensors only")


@contextlib.contextmanager
def enforce_nccl_rules(device_type: str = None):
    """Within the block, every communication call of ``torch.distributed`` is checked first."""
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    originals = {name: getattr(dist, name) for name in COMMUNICATION_CALLS if hasattr(dist, name)}

    def wrap(name, call):
        def checked(*args, **kwargs):
            check_call(name, args, kwargs, device_type)
            return call(*args, **kwargs)
        checked.nccl_rules_original = call
        return checked

    for name, call in originals.items():
        setattr(dist, name, wrap(name, call))
    try:
        yield
    finally:
        for name, call in originals.items():
            setattr(dist, name, call)


def wrapped_calls() -> List[str]:
    """The names currently wrapped (for the harness's own test)."""
    return [name for name in COMMUNICATION_CALLS if hasattr(getattr(dist, name, None), "nccl_rules_original")]

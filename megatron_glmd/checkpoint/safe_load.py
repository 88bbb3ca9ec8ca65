"""Loading checkpoints without running code from them.

``torch.load(weights_only=True)`` unpickles tensors, numbers, strings and containers only; any
other global in the file is refused. A megatron-glmd checkpoint holds exactly that, plus the few
plain DeepSpeed types its ZeRO optimizer files carry (:data:`DEEPSPEED_TYPES`, found by loading
checkpoints of every precision this engine writes). DeepSpeed's own loader unpickles with
``weights_only=False``; :func:`make_loads_safe` replaces its load on the engine, so every file
DeepSpeed reads on resume goes through :func:`safe_torch_load`. A tampered file (a pickle payload)
or a damaged one stops the run with one line naming the file.
"""
from __future__ import annotations

import pickle
import re
from typing import Any, List

import torch

from ..config import ConfigError


def _deepspeed_types() -> List[type]:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be trusted or read: refused, with its path."""


def safe_torch_load(path: str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` that runs no code from the file: plain data and DeepSpeed's plain types only."""
    try:
        with torch.serialization.safe_globals(_deepspeed_types()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"the global {found.group(1)}" if found else "something other than tensors and plain data"
        raise CheckpointError(f"{path}: refused to load: it would unpickle {what}, which no checkpoint of this "
                              "engine holds (a tampered or foreign file)") from None
    except (EOFError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{path}: damaged or truncated checkpoint file ({str(e).splitlines()[0]})") from None


def make_loads_safe(engine) -> None:
    """Route every file a DeepSpeed engine loads (model, optimizer, scheduler) through
    :func:`safe_torch_load`; saving is left to DeepSpeed."""
    def load(path: str, map_location=None):
        return safe_torch_load(path, map_location=map_location if map_location is not None else "cpu")

    engine.checkpoint_engine.load = load

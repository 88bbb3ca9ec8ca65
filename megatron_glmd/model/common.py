"""What every model family's pipeline stage shares: the default layer split and the dtype names."""
from __future__ import annotations

from typing import Tuple

import torch

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def stage_layer_range(num_layers: int, pp_size: int, pp_rank: int) -> Tuple[int, int]:
    """Global layer indices ``[start, end)`` of a stage; earlier stages take the remainder."""
    if not 0 <= pp_rank < pp_size:
        raise ValueError(f"pipeline rank {pp_rank} outside [0, {pp_size})")
    if pp_size > num_layers:
        raise ValueError(f"pipeline-parallel size {pp_size} exceeds num_layers {num_layers}")
    base, extra = divmod(num_layers, pp_size)
    start = pp_rank * base + min(pp_rank, extra)
    return start, start + base + (1 if pp_rank < extra else 0)

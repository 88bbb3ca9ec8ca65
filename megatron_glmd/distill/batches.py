"""Deterministic global batches, sharded by data-parallel rank and cut into micro-batches.

Iteration ``it`` consumes global samples ``[it·B, (it+1)·B)`` (modulo the dataset length, whose
sample index already spans the requested epochs); data-parallel rank d takes the d-th contiguous
B/DP of them, in micro-batches. The data position is therefore the iteration number itself:
a checkpoint that stores the iteration restores the data stream exactly, at any DP size.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

INPUT_KEYS = ("input_ids", "position_ids", "sep", "length")
LABEL_KEYS = ("target_ids", "loss_mask", "length")


def collate(samples: Sequence[Dict]) -> Dict[str, torch.Tensor]:
    """Stack blank-infilling samples (dicts of arrays and ints) into batch tensors."""
    out = {}
    for key in ("input_ids", "target_ids", "position_ids"):
        out[key] = torch.from_numpy(np.stack([np.asarray(s[key], dtype=np.int64) for s in samples]))
    out["loss_mask"] = torch.from_numpy(np.stack([np.asarray(s["loss_mask"], dtype=np.float32) for s in samples]))
    out["sep"] = torch.tensor([int(s["sep"]) for s in samples], dtype=torch.long)
    out["length"] = torch.tensor([int(s["length"]) for s in samples], dtype=torch.long)
    return out


def rank_sample_indices(iteration: int, global_batch: int, dp_rank: int, dp_size: int,
                        num_samples: int) -> np.ndarray:
    per_rank = global_batch // dp_size
    start = iteration * global_batch + dp_rank * per_rank
    return (start + np.arange(per_rank)) % num_samples


def micro_batches(dataset, iteration: int, global_batch: int, micro_batch: int, dp_rank: int,
                  dp_size: int) -> List[Dict[str, torch.Tensor]]:
    """This DP rank's micro-batches of training iteration ``iteration``."""
    indices = rank_sample_indices(iteration, global_batch, dp_rank, dp_size, len(dataset))
    return [collate([dataset[int(i)] for i in indices[k:k + micro_batch]])
            for k in range(0, len(indices), micro_batch)]


def pipeline_item(batch: Dict[str, torch.Tensor]) -> Tuple[Tuple[torch.Tensor, ...], Tuple[torch.Tensor, ...]]:
    """(first-stage inputs, last-stage labels) as DeepSpeed's pipeline engine reads them."""
    return tuple(batch[k] for k in INPUT_KEYS), tuple(batch[k] for k in LABEL_KEYS)

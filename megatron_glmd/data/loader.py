"""Collation and a data-parallel loader whose position a checkpoint stores and restores exactly.

Global batch ``g`` is samples ``[g·G, (g+1)·G)`` of the dataset (which is already shuffled).
Data-parallel rank ``r`` of ``P`` takes the contiguous slice ``[g·G + r·G/P, g·G + (r+1)·G/P)``
and serves it as micro-batches of ``micro_batch_size``. The position is
``(consumed_samples, micro_batch)``: the first sample of the current global batch and the number
of this rank's micro-batches of it already served. Restoring at a global-batch boundary
(``micro_batch == 0``) also works with a different DP size or micro-batch size.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from .errors import DataError

_LONG_KEYS = ("input_ids", "target_ids", "position_ids")


def collate(samples: Sequence[dict]) -> Dict[str, torch.Tensor]:
    """Stack blank-infilling or causal sample dicts into batch tensors (see the README's data section);
    a causal sample has no ``sep`` (its batch neither), and its ``position_ids`` are [s], not [2, s]."""
    if not samples:
        raise DataError("cannot collate an empty list of samples")
    batch = {key: torch.from_numpy(np.stack([s[key] for s in samples])).long() for key in _LONG_KEYS}
    batch["loss_mask"] = torch.from_numpy(np.stack([s["loss_mask"] for s in samples])).float()
    if "sep" in samples[0]:
        batch["sep"] = torch.tensor([s["sep"] for s in samples], dtype=torch.long)
    batch["length"] = torch.tensor([s["length"] for s in samples], dtype=torch.long)
    return batch


class DataParallelLoader:
    """Iterator over this DP rank's collated micro-batches; stops after the last full global batch."""

    def __init__(self, dataset, global_batch_size: int, micro_batch_size: int, dp_rank: int = 0, dp_size: int = 1,
                 collate_fn=collate):
        if dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise DataError(f"dp_rank {dp_rank} is not in [0, dp_size={dp_size})")
        if micro_batch_size < 1 or global_batch_size % (dp_size * micro_batch_size):
            raise DataError(f"global batch {global_batch_size} is not a multiple of dp_size {dp_size} "
                            f"x micro batch {micro_batch_size}")
        self.dataset = dataset
        self.global_batch_size = int(global_batch_size)
        self.micro_batch_size = int(micro_batch_size)
        self.dp_rank, self.dp_size = int(dp_rank), int(dp_size)
        self.collate_fn = collate_fn
        self.consumed_samples = 0
        self.micro_batch = 0

    @property
    def micro_batches_per_global_batch(self) -> int:
        return self.global_batch_size // (self.dp_size * self.micro_batch_size)

    @property
    def num_global_batches(self) -> int:
        return len(self.dataset) // self.global_batch_size

    def sample_ids(self) -> List[int]:
        """Dataset indices of the micro-batch the next ``next()`` returns."""
        per_rank = self.global_batch_size // self.dp_size
        start = self.consumed_samples + self.dp_rank * per_rank + self.micro_batch * self.micro_batch_size
        return list(range(start, start + self.micro_batch_size))

    def __iter__(self) -> "DataParallelLoader":
        return self

    def __next__(self) -> Dict[str, torch.Tensor]:
        if self.consumed_samples + self.global_batch_size > len(self.dataset):
            raise StopIteration
        batch = self.collate_fn([self.dataset[i] for i in self.sample_ids()])
        self.micro_batch += 1
        if self.micro_batch == self.micro_batches_per_global_batch:
            self.micro_batch = 0
            self.consumed_samples += self.global_batch_size
        return batch

    def state_dict(self) -> dict:
        fingerprint = self.dataset.fingerprint() if hasattr(self.dataset, "fingerprint") else {"len": len(self.dataset)}
        return {"consumed_samples": self.consumed_samples, "micro_batch": self.micro_batch,
                "global_batch_size": self.global_batch_size, "micro_batch_size": self.micro_batch_size,
                "dp_size": self.dp_size, "dataset": fingerprint}

    def load_state_dict(self, state: dict) -> None:
        for key in ("consumed_samples", "micro_batch", "global_batch_size", "micro_batch_size", "dp_size", "dataset"):
            if key not in state:
                raise DataError(f"loader state has no {key!r} entry")
        mine = self.state_dict()
        if state["dataset"] != mine["dataset"]:
            raise DataError(f"loader state belongs to dataset {state['dataset']}, this loader reads {mine['dataset']}")
        if state["global_batch_size"] != self.global_batch_size:
            raise DataError(f"loader state has global batch {state['global_batch_size']}, "
                            f"this loader uses {self.global_batch_size}")
        if state["micro_batch"] and (state["dp_size"], state["micro_batch_size"]) != (self.dp_size,
                                                                                      self.micro_batch_size):
            raise DataError("a loader stopped inside a global batch can only resume with the same dp_size and "
                            "micro_batch_size")
        if state["consumed_samples"] % self.global_batch_size or state["consumed_samples"] < 0:
            raise DataError(f"consumed_samples {state['consumed_samples']} is not a multiple of the global batch")
        self.consumed_samples = int(state["consumed_samples"])
        self.micro_batch = int(state["micro_batch"])

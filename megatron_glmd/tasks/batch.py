"""Encoded cloze examples as a map-style dataset and as batches of torch tensors.

Single-token batch (``collate_single``): ``input_ids [b, s]``, ``position_ids [b, 2, s]`` (a decoder's: ``[b, s]``),
``target_ids [b, s]``, ``loss_mask [b, s]``, ``sep [b]``, ``length [b]`` (the blank-infilling fields),
``mask_position [b]`` and ``label [b]`` (the target verbalizer index, -1: none). The task logits
are read at row ``sep`` (GLM: the [sop], :mod:`.encode`; a decoder: the context's last token,
:mod:`.encode_causal`).

Multi-token batch (``collate_candidates``): every example padded to ``num_choices`` candidates by
repeating its first one, flattened example-major to ``b·n`` samples: the six blank-infilling fields
with a leading ``b·n``, ``choice_mask [b, n]`` (1.0 on real candidates, 0.0 on padding, float32)
and ``label [b]`` (the right candidate, -1: none).
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch

from ..data.errors import DataError
from .encode import encode_candidates, encode_single, verbalizer_token_ids
from .encode_causal import encode_candidates_causal, encode_single_causal
from .task import ClozeExample, ClozeTask

FIELDS = ("input_ids", "position_ids", "target_ids", "loss_mask", "sep", "length")


def encode_example(task: ClozeTask, example: ClozeExample, tokenizer, seq_length: int, verbalizer_ids=None,
                   causal: bool = False) -> dict:
    """One example as GLM's blank-infilling sample(s) (:mod:`.encode`) or, ``causal``, as a decoder's
    causal sample(s) (:mod:`.encode_causal`); single-token or one sample per candidate, as the task is."""
    if task.multi_token:
        return (encode_candidates_causal if causal else encode_candidates)(task, example, tokenizer, seq_length)
    if verbalizer_ids is None:
        verbalizer_ids = verbalizer_token_ids(task, tokenizer)
    return (encode_single_causal if causal else encode_single)(task, example, tokenizer, seq_length, verbalizer_ids)


class ClozeDataset:
    """``dataset[i]`` is example i encoded (:func:`encode_example`); encoding happens on access.
    ``causal``: the decoder family's samples (``model.architecture: decoder``)."""

    def __init__(self, task: ClozeTask, examples: Sequence[ClozeExample], tokenizer, seq_length: int,
                 causal: bool = False):
        self.task, self.examples, self.tokenizer, self.seq_length = task, list(examples), tokenizer, seq_length
        self.causal = causal
        self.verbalizer_ids = None if task.multi_token else verbalizer_token_ids(task, tokenizer)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return encode_example(self.task, self.examples[i], self.tokenizer, self.seq_length, self.verbalizer_ids,
                              causal=self.causal)

    @property
    def max_candidates(self) -> int:
        return max((len(e.candidates) for e in self.examples), default=0)

    def collate(self, samples: List[dict], num_choices: int = 0) -> dict:
        """The task's batch; ``num_choices`` (multi-token) defaults to the most of any example."""
        if not self.task.multi_token:
            return collate_single(samples)
        return collate_candidates(samples, num_choices or self.max_candidates)


def collate_single(samples: List[dict]) -> dict:
    keys = FIELDS + ("mask_position", "label")
    return {k: torch.as_tensor(np.stack([np.asarray(s[k]) for s in samples])) for k in keys}


def collate_candidates(samples: List[dict], num_choices: int) -> dict:
    out = {k: [] for k in FIELDS}
    choice_mask = np.zeros((len(samples), num_choices), dtype=np.float32)
    for i, s in enumerate(samples):
        n = len(s["sep"])
        if n > num_choices:
            raise DataError(f"an example has {n} candidates, the batch takes {num_choices}")
        choice_mask[i, :n] = 1.0
        keep = list(range(n)) + [0] * (num_choices - n)
        for k in FIELDS:
            out[k].append(np.asarray(s[k])[keep])
    batch = {k: torch.as_tensor(np.concatenate(v)) for k, v in out.items()}
    batch["choice_mask"] = torch.as_tensor(choice_mask)
    batch["label"] = torch.as_tensor(np.array([s["label"] for s in samples], dtype=np.int64))
    return batch

"""Causal (next-token) samples of the decoder family, packed from the same indexed datasets as GLM's.

Every document is followed by the tokenizer's end-of-document id (EOD) and the documents form one
stream, cut into windows of ``seq_length + 1`` tokens by the same C++ sample index as GLM's
(:mod:`.sample_index`, over document lengths ``n + 1``: the EOD is counted, not stored). Window
``shuffle_idx[n]`` gives sample ``n``: its first ``seq_length`` tokens are the inputs, its last
``seq_length`` the next-token targets. Nothing else is random, so a sample is a pure function of
(dataset, ``seq_length``, seed, sample index), and the loader (:mod:`.loader`) shards and restores
it exactly as it does GLM's samples.

Fields (:func:`causal_sample`; ``n`` = tokens with a target, ``seq_length`` when the window is full):

* ``input_ids`` [s], ``target_ids`` [s]: the window shifted by one; pad id past ``n``;
* ``position_ids`` [s]: 0 at the window's first token and right after every EOD, counting up
  inside a document; 0 on padding. The model's document mask reads them: a new document starts
  where ``position_ids == 0``, so a token attends to earlier tokens of its own document only. A
  document cut by the window's start begins at position 0 (its earlier part is in another sample);
  a window that starts with an EOD holds that EOD as a one-token document;
* ``loss_mask`` [s] (m_p): 1 on every token that has a target (the first ``n``), including an EOD,
  whose target is the next document's first token;
* ``length``: ``n``, the non-pad tokens.

The EOD is the only token between documents, so "restart after EOD" and "restart at a document
start" are the same rule; the tokenizers never produce the EOD id from raw text (data/hf_tokenizer.py),
so it does not occur inside a document.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import DataError
from .indexed_dataset import IndexedDataset
from .sample_index import build_windows, window_pieces


def causal_sample(tokens: np.ndarray, piece_starts: Sequence[int], seq_length: int, pad_id: int) -> dict:
    """The sample of one window (module docstring). ``tokens``: at most ``seq_length + 1`` ids;
    ``piece_starts``: offsets in ``tokens`` where a document (or the window's cut piece) starts."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n = tokens.size - 1
    if not 1 <= n <= seq_length:
        raise DataError(f"a causal window needs 2..{seq_length + 1} tokens, got {tokens.size}")
    input_ids = np.full(seq_length, pad_id, dtype=np.int64)
    target_ids = np.full(seq_length, pad_id, dtype=np.int64)
    input_ids[:n], target_ids[:n] = tokens[:n], tokens[1:]
    # Position = offset from the latest piece start at or before each token.
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    starts[[s for s in piece_starts if 0 < s < n]] = True
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    position_ids = np.zeros(seq_length, dtype=np.int64)
    position_ids[:n] = np.arange(n) - first
    loss_mask = np.zeros(seq_length, dtype=np.float32)
    loss_mask[:n] = 1.0
    return {"input_ids": input_ids, "target_ids": target_ids, "position_ids": position_ids,
            "loss_mask": loss_mask, "length": n}


class CausalDataset:
    """Map-style dataset of packed causal sample dicts (module docstring)."""

    def __init__(self, indexed: IndexedDataset, seq_length: int, eod_id: Optional[int], pad_id: int,
                 seed: int = 1234, num_samples: Optional[int] = None, num_epochs: Optional[int] = None,
                 use_cpp: bool = True):
        if eod_id is None:
            raise DataError("the tokenizer has no end-of-document token; causal samples separate documents by it")
        if seq_length < 1:
            raise DataError(f"seq_length must be >= 1, got {seq_length}")
        vocab = indexed.vocab_size
        for name, value in (("eod_id", eod_id), ("pad_id", pad_id)):
            if not 0 <= int(value) < vocab:
                raise DataError(f"{name} {value} is outside the dataset's vocabulary [0, {vocab})")
        self.indexed = indexed
        self.seq_length, self.eod_id, self.pad_id, self.seed = int(seq_length), int(eod_id), int(pad_id), int(seed)
        self._doc_offsets = indexed.doc_offsets()
        self._doc_lengths = np.diff(self._doc_offsets)
        if self._doc_lengths.size == 0:
            raise DataError(f"dataset {indexed.prefix!r} has no documents")
        self._units = self._doc_lengths + 1                 # a document and its EOD
        self.index, self.num_epochs, self._len = build_windows(self._units, self.seq_length + 1, self.seed,
                                                               num_samples, num_epochs, use_cpp)

    def __len__(self) -> int:
        return self._len

    def fingerprint(self) -> dict:
        """What a checkpointed loader position is only valid for."""
        return {"prefix": self.indexed.prefix, "num_tokens": self.indexed.num_tokens, "seed": self.seed,
                "num_samples": self._len, "samples": "causal", "seq_length": self.seq_length,
                "eod_id": self.eod_id, "pad_id": self.pad_id}

    def window(self, n: int) -> Tuple[np.ndarray, List[int]]:
        """Sample ``n``'s ``seq_length + 1`` tokens (EODs inserted) and the offsets where its pieces start."""
        if not 0 <= n < self._len:
            raise IndexError(f"sample {n} out of range [0, {self._len})")
        parts, piece_starts, at = [], [], 0
        for doc, start, end in window_pieces(self.index, self._units, int(self.index.shuffle_idx[n])):
            base, doc_len = int(self._doc_offsets[doc]), int(self._doc_lengths[doc])
            piece = self.indexed.tokens[base + start:base + min(end, doc_len)]
            parts.append(np.asarray(piece, dtype=np.int64))
            if end == doc_len + 1:
                parts.append(np.array([self.eod_id], dtype=np.int64))
            piece_starts.append(at)
            at += end - start
        return np.concatenate(parts), piece_starts

    def __getitem__(self, n: int) -> dict:
        tokens, piece_starts = self.window(n)
        return causal_sample(tokens, piece_starts, self.seq_length, self.pad_id)

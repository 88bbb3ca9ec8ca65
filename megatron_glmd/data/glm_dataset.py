"""Blank-infilling dataset: sample index (C++) over an indexed dataset + the GLM sample builder.

The special ids (pad, [CLS], masks, [sop], [eop], end of document) are the tokenizer's, passed in
as a :class:`~.tokenizer.SpecialIds`. Sample ``n`` is window ``shuffle_idx[n]`` of the sample
index, put in GLM's format and turned into a blank-infilling sample with a generator seeded by
``(seed, 0, n)``. In task-mask mode the corruption mode is
drawn from a generator seeded by ``(seed, 1, n // mode_group_size)``: with ``mode_group_size``
equal to the global batch size, every sample of a global batch uses the same mode, as GLM does.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .blank_infilling import MODE_MASK, BlankInfillingConfig, build_sample, mark_documents
from .errors import DataError
from .indexed_dataset import IndexedDataset
from .tokenizer import SpecialIds
from .sample_index import build_windows, window_pieces


class BlankInfillingDataset:
    """Map-style dataset of blank-infilling sample dicts (see :mod:`.blank_infilling`)."""

    def __init__(self, indexed: IndexedDataset, config: BlankInfillingConfig, special_ids: SpecialIds, seed: int = 1234,
                 num_samples: Optional[int] = None, num_epochs: Optional[int] = None, mode_group_size: int = 1,
                 use_cpp: bool = True):
        if mode_group_size < 1:
            raise DataError(f"mode_group_size must be >= 1, got {mode_group_size}")
        self.indexed = indexed
        self.config = config
        self.special_ids = special_ids
        self.seed = int(seed)
        self.mode_group_size = int(mode_group_size)
        self._doc_offsets = indexed.doc_offsets()
        self._doc_lengths = np.diff(self._doc_offsets)
        if self._doc_lengths.size == 0:
            raise DataError(f"dataset {indexed.prefix!r} has no documents")
        self.index, self.num_epochs, self._len = build_windows(self._doc_lengths, config.window_length, self.seed,
                                                               num_samples, num_epochs, use_cpp)

    def __len__(self) -> int:
        return self._len

    def fingerprint(self) -> dict:
        """What a checkpointed loader position is only valid for."""
        return {"prefix": self.indexed.prefix, "num_tokens": self.indexed.num_tokens, "seed": self.seed,
                "num_samples": self._len, "mode_group_size": self.mode_group_size, "config": repr(self.config),
                "special_ids": repr(self.special_ids)}

    def window(self, n: int):
        """Sample ``n``'s text window in GLM's format: (marked tokens, text segments, sentence starts)
        (:func:`~.blank_infilling.mark_documents`)."""
        if not 0 <= n < self._len:
            raise IndexError(f"sample {n} out of range [0, {self._len})")
        pieces = window_pieces(self.index, self._doc_lengths, int(self.index.shuffle_idx[n]))
        parts, doc_starts, doc_ends, sentence_starts, at = [], [], [], [], 0
        sent_off, doc_sent = self.indexed.sentence_offsets, self.indexed.doc_sentence_index
        for doc, start, end in pieces:
            base = int(self._doc_offsets[doc])
            parts.append(self.indexed.tokens[base + start:base + end])
            doc_starts.append(at)
            inner = np.asarray(sent_off[doc_sent[doc]:doc_sent[doc + 1]]) - base
            inner = inner[(inner > start) & (inner < end)]
            sentence_starts.extend((inner - start + at).tolist())
            at += end - start
            if end == self._doc_lengths[doc]:
                doc_ends.append(at)
        return mark_documents(np.concatenate(parts), doc_starts, doc_ends, sentence_starts, self.special_ids)

    def mode_of(self, n: int) -> int:
        if not self.config.task_mask:
            return MODE_MASK
        rng = np.random.default_rng([self.seed, 1, n // self.mode_group_size])
        return int(rng.choice(3, p=self.config.mode_probs))

    def __getitem__(self, n: int) -> dict:
        tokens, segments, sentence_starts = self.window(n)
        rng = np.random.default_rng([self.seed, 0, n])
        return build_sample(tokens, segments, sentence_starts, self.mode_of(n), rng, self.config, self.special_ids)

"""Shuffled index of fixed-length samples over documents, for several epochs.

The algorithm (implemented twice: C++ in ``helpers.cpp`` for use, NumPy here as the reference):

1. ``doc_idx``: for every epoch ``e`` an independent permutation of the document ids, keyed by
   ``derive_key(seed, 1, e)``; the epochs' permutations are concatenated (``int32[E·D]``).
2. ``sample_idx``: the documents in ``doc_idx`` order form one token stream of
   ``E·T`` tokens (``T`` tokens per epoch). It is cut into ``S = E·T // seq_length`` windows of
   ``seq_length`` tokens (the remainder is dropped). Row ``k`` of ``int64[S + 1, 2]`` is
   ``(position in doc_idx, token offset in that document)`` where window ``k`` starts; a cut
   that falls between two documents is recorded as ``(next position, 0)``. Window ``k`` ends
   where window ``k + 1`` starts. Windows cross document boundaries.
3. ``shuffle_idx``: a permutation of ``range(S)`` keyed by ``derive_key(seed, 2, 0)``: the
   ``n``-th sample served is window ``shuffle_idx[n]``.

Randomness is counter-based so both implementations agree bit for bit:
``mix64`` is the splitmix64 finaliser, ``derive_key(seed, stream, epoch) =
mix64(mix64(mix64(seed) + stream) + epoch)``, and a permutation of ``range(n)`` under ``key``
is Fisher–Yates from the top: for ``i = n-1 … 1``, ``r = mix64(key + i·0x9E3779B97F4A7C15)``
(mod 2⁶⁴), ``j = floor(r·(i + 1) / 2⁶⁴)`` (a multiply-shift bounded draw, bias below
``n / 2⁶⁴``; ``n ≤ 2³²``), swap ``a[i]`` and ``a[j]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import DataError

GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
_MAX_SHUFFLE = 1 << 32


@dataclass
class SampleIndex:
    doc_idx: np.ndarray      # int32 [E * D]
    sample_idx: np.ndarray   # int64 [S + 1, 2]
    shuffle_idx: np.ndarray  # int64 [S]

    @property
    def num_samples(self) -> int:
        return int(self.shuffle_idx.size)


def mix64_int(z: int) -> int:
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def derive_key(seed: int, stream: int, epoch: int) -> int:
    return mix64_int(mix64_int(mix64_int(seed) + stream) + epoch)


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _mulhi(r: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``floor(r · m / 2⁶⁴)`` exactly in uint64 arithmetic, for ``m ≤ 2³²``."""
    lo32 = np.uint64(0xFFFFFFFF)
    hi, lo = r >> np.uint64(32), r & lo32
    return (hi * m + ((lo * m) >> np.uint64(32))) >> np.uint64(32)


def permutation_reference(n: int, key: int) -> np.ndarray:
    """NumPy/Python Fisher–Yates permutation of ``range(n)`` (see the module docstring)."""
    if n < 2:
        return np.arange(max(n, 0), dtype=np.int64)
    if n > _MAX_SHUFFLE:
        raise DataError(f"cannot shuffle {n} items (at most 2^32)")
    i = np.arange(1, n, dtype=np.uint64)
    j = _mulhi(_mix64(np.uint64(key & _MASK) + i * np.uint64(GOLDEN)), i + np.uint64(1)).astype(np.int64).tolist()
    a = list(range(n))
    for pos in range(n - 1, 0, -1):  # the swaps are sequential: each depends on the previous ones
        other = j[pos - 1]
        a[pos], a[other] = a[other], a[pos]
    return np.array(a, dtype=np.int64)


def _validate(doc_lengths, seq_length: int, num_epochs: int) -> np.ndarray:
    lengths = np.ascontiguousarray(doc_lengths, dtype=np.int64)
    if lengths.ndim != 1 or lengths.size == 0:
        raise DataError("the sample index needs a non-empty 1-D array of document lengths")
    if seq_length < 1:
        raise DataError(f"seq_length must be >= 1, got {seq_length}")
    if num_epochs < 1:
        raise DataError(f"num_epochs must be >= 1, got {num_epochs}")
    bad = np.flatnonzero(lengths < 1)
    if bad.size:
        raise DataError(f"document {int(bad[0])} has length {int(lengths[bad[0]])}; every document needs a token")
    return lengths


def build_sample_index_reference(doc_lengths, seq_length: int, num_epochs: int, seed: int) -> SampleIndex:
    """The NumPy reference implementation (slow; used by the tests and the benchmark)."""
    lengths = _validate(doc_lengths, seq_length, num_epochs)
    num_docs = lengths.size
    doc_idx = np.concatenate([permutation_reference(num_docs, derive_key(seed, 1, e))
                              for e in range(num_epochs)]).astype(np.int32)
    stream = np.zeros(doc_idx.size + 1, dtype=np.int64)
    np.cumsum(lengths[doc_idx], out=stream[1:])
    num_samples = int(stream[-1]) // seq_length
    starts = np.arange(num_samples + 1, dtype=np.int64) * seq_length
    position = np.searchsorted(stream, starts, side="right") - 1
    sample_idx = np.stack([position, starts - stream[position]], axis=1)
    shuffle_idx = permutation_reference(num_samples, derive_key(seed, 2, 0))
    return SampleIndex(doc_idx, sample_idx, shuffle_idx)


def _extension():
    try:
        from . import _helpers
    except ImportError as exc:
        raise ImportError("the C++ data helpers (megatron_glmd.data._helpers) are not built; "
                          "run `pip install -e .` in the repository root") from exc
    return _helpers


def build_sample_index(doc_lengths, seq_length: int, num_epochs: int, seed: int) -> SampleIndex:
    """Build the sample index with the C++ extension (same result as the reference)."""
    lengths = _validate(doc_lengths, seq_length, num_epochs)
    doc_idx, sample_idx, shuffle_idx = _extension().build_sample_index(lengths, int(seq_length), int(num_epochs),
                                                                       int(seed) & _MASK)
    return SampleIndex(doc_idx, sample_idx, shuffle_idx)


def epochs_for_samples(doc_lengths, seq_length: int, num_samples: int) -> int:
    """Fewest epochs whose windows number at least ``num_samples``."""
    tokens_per_epoch = int(np.asarray(doc_lengths, dtype=np.int64).sum())
    if tokens_per_epoch < 1:
        raise DataError("the dataset has no tokens")
    needed_tokens = int(num_samples) * int(seq_length)
    return max(1, -(-needed_tokens // tokens_per_epoch))


def build_windows(doc_lengths, window: int, seed: int, num_samples: Optional[int] = None,
                  num_epochs: Optional[int] = None, use_cpp: bool = True) -> Tuple[SampleIndex, int, int]:
    """The sample index of a dataset's windows for exactly one of ``num_samples`` (as many epochs as
    they need) or ``num_epochs``: ``(index, epochs, samples served)``. One place for both sample
    families (blank infilling, causal), C++ or the NumPy reference."""
    if (num_samples is None) == (num_epochs is None):
        raise DataError("give exactly one of num_samples and num_epochs")
    epochs = num_epochs if num_epochs is not None else epochs_for_samples(doc_lengths, window, num_samples)
    build = build_sample_index if use_cpp else build_sample_index_reference
    index = build(doc_lengths, window, epochs, seed)
    served = index.num_samples if num_samples is None else int(num_samples)
    if served > index.num_samples:
        raise DataError(f"asked for {served} samples, {epochs} epochs give {index.num_samples}")
    return index, epochs, served


def window_pieces(index: SampleIndex, doc_lengths: np.ndarray, window: int):
    """``[(doc id, start, end), ...]`` token ranges of window ``window`` (unshuffled number)."""
    (pos, off), (end_pos, end_off) = index.sample_idx[window], index.sample_idx[window + 1]
    pieces = []
    pos, off, end_pos, end_off = int(pos), int(off), int(end_pos), int(end_off)
    while pos < end_pos:
        doc = int(index.doc_idx[pos])
        pieces.append((doc, off, int(doc_lengths[doc])))
        pos, off = pos + 1, 0
    if end_off > off:
        pieces.append((int(index.doc_idx[pos]), off, end_off))
    return pieces

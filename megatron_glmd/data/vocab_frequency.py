"""Token-id frequencies over indexed datasets, the vocabulary ranking, and the kept-set size.

DESIGN.md §1.4: protected tokens (every special token and every listed token, e.g. verbalizer
tokens) rank first, in ascending id order, so the special ids 0..9 keep their ids in a
compressed vocabulary; then all other ids by descending count, ties by ascending id. The first
``K = ceil(v · r_v / 128) · 128`` ids of the ranking form the kept set.

Counting streams each dataset's memory-mapped ``.bin`` in chunks with ``numpy.bincount``:
memory is O(V + chunk), never O(corpus). Several processes count disjoint chunks; the main
process adds their count vectors.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .errors import DataError
from .indexed_dataset import IndexedDataset, open_datasets
from .tokenizer import NUM_SPECIAL_TOKENS

DEFAULT_CHUNK_TOKENS = 1 << 24
_BLOCK_TOKENS = 1 << 18
TSV_HEADER = ("id", "token", "count", "rank")


def kept_vocab_size(vocab_size: int, ratio: float) -> int:
    """``K = ceil(v · r_v / 128) · 128``: the number of top-ranked ids a compressed vocabulary keeps."""
    if vocab_size < 1:
        raise DataError(f"vocab size must be positive, got {vocab_size}")
    if not 0.0 < ratio <= 1.0:
        raise DataError(f"vocabulary ratio r_v must be in (0, 1], got {ratio}")
    # Exact rational arithmetic on the float's value avoids ceil(128.00000000000003) = 129 surprises.
    from fractions import Fraction
    return math.ceil(Fraction(vocab_size) * Fraction(str(ratio)) / 128) * 128


def rank_vocabulary(counts: np.ndarray, protected_ids: Iterable[int] = ()) -> np.ndarray:
    """Ids in rank order: protected (specials always included) by id, then count desc, id asc."""
    counts = np.asarray(counts, dtype=np.int64)
    vocab_size = counts.size
    protected = set(range(min(NUM_SPECIAL_TOKENS, vocab_size)))
    for token_id in protected_ids:
        token_id = int(token_id)
        if not 0 <= token_id < vocab_size:
            raise DataError(f"protected token id {token_id} is outside the vocabulary [0, {vocab_size})")
        protected.add(token_id)
    is_protected = np.zeros(vocab_size, dtype=bool)
    is_protected[list(protected)] = True
    ids = np.arange(vocab_size, dtype=np.int64)
    # lexsort: last key is primary. Protected first; then -count; then id.
    order = np.lexsort((ids, np.where(is_protected, 0, -counts), ~is_protected))
    return order


def ranks_from_order(order: np.ndarray) -> np.ndarray:
    """``rank[id]`` from the rank-ordered ids."""
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size, dtype=order.dtype)
    return rank


def kept_token_ids(order: np.ndarray, vocab_size: int, ratio: float, num_protected: int = 0) -> np.ndarray:
    """The ``min(K, v)`` top-ranked ids (the kept set ``w_c``), in rank order."""
    k = kept_vocab_size(vocab_size, ratio)
    if k < num_protected:
        raise DataError(f"the kept set of {k} ids cannot hold the {num_protected} protected tokens; raise r_v")
    return np.asarray(order[:min(k, vocab_size)])


# --- counting ----------------------------------------------------------------------------------
def _chunk_plan(datasets: Sequence[IndexedDataset], chunk_tokens: int) -> List[Tuple[int, int, int]]:
    plan = []
    for d, ds in enumerate(datasets):
        for start in range(0, ds.num_tokens, chunk_tokens):
            plan.append((d, start, min(start + chunk_tokens, ds.num_tokens)))
    return plan


_worker_datasets: Optional[List[IndexedDataset]] = None


def _init_worker(prefixes: Sequence[str]) -> None:
    global _worker_datasets
    _worker_datasets = [IndexedDataset(p) for p in prefixes]


def _count_chunk(job: Tuple[int, int, int, int]):
    d, start, end, vocab_size = job
    tokens = _worker_datasets[d].tokens[start:end]
    counts = np.zeros(vocab_size, dtype=np.int64)
    # bincount widens its input to intp; cache-sized blocks keep that copy out of main memory
    # (measured ~1.4x faster than one call per 16 M-token chunk).
    for block_start in range(0, tokens.size, _BLOCK_TOKENS):
        block = tokens[block_start:block_start + _BLOCK_TOKENS]
        block_counts = np.bincount(block, minlength=vocab_size)
        if block_counts.size > vocab_size:
            bad = int(np.flatnonzero(block >= vocab_size)[0])
            raise DataError(f"{_worker_datasets[d].prefix}.bin holds id {int(block[bad])} at token "
                            f"{start + block_start + bad}, outside the vocabulary [0, {vocab_size})")
        counts += block_counts
    return counts, end - start


def _pool_context():
    """``fork`` where the platform has it: the workers only read memory maps with NumPy, and a
    spawned worker's ~0.4 s of imports would cost as much as counting 100 M tokens."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


@dataclass
class CountResult:
    counts: np.ndarray   # int64 [vocab_size]
    tokens: int
    seconds: float
    processes: int = 1

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def count_token_ids(prefixes: Sequence[str], vocab_size: int, workers: int = 1,
                    chunk_tokens: int = DEFAULT_CHUNK_TOKENS, progress: bool = True) -> CountResult:
    """Count every id over the datasets ``prefixes`` (``PREFIX.bin``/``.idx``)."""
    if not prefixes:
        raise DataError("no dataset prefixes given")
    if workers < 1:
        raise DataError(f"workers must be at least 1, got {workers}")
    if chunk_tokens < 1:
        raise DataError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    prefixes = [os.fspath(p) for p in prefixes]
    datasets = open_datasets(prefixes, vocab_size)
    plan = _chunk_plan(datasets, chunk_tokens)
    total = sum(ds.num_tokens for ds in datasets)
    jobs = [(d, s, e, vocab_size) for d, s, e in plan]
    counts = np.zeros(vocab_size, dtype=np.int64)
    start_time = time.perf_counter()
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="counting", disable=not progress)
    try:
        processes = min(workers, len(jobs))
        if processes == 1:
            _init_worker(prefixes)
            results = map(_count_chunk, jobs)
            pool = None
        else:
            pool = _pool_context().Pool(processes, _init_worker, (prefixes,))
            results = pool.imap_unordered(_count_chunk, jobs)
        try:
            for chunk_counts, n in results:
                counts += chunk_counts
                bar.update(n)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    finally:
        bar.close()
    return CountResult(counts, total, time.perf_counter() - start_time, processes)


# --- files -------------------------------------------------------------------------------------
def read_protected_tokens(path: str, token_to_id) -> List[int]:
    """Ids of the pieces listed one per line in ``path`` (blank lines ignored)."""
    if not os.path.isfile(path):
        raise DataError(f"protected-tokens file {path!r} does not exist")
    ids = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            token = line.strip()
            if not token:
                continue
            try:
                ids.append(token_to_id(token))
            except DataError:
                raise DataError(f"{path}:{number}: token {token!r} is not in the tokenizer's vocabulary") from None
    return ids


def write_frequency_tsv(path: str, tokens: Sequence[str], counts: np.ndarray, order: np.ndarray) -> None:
    """Atomically write ``id\\ttoken\\tcount\\trank`` rows, one per id in id order."""
    rank = ranks_from_order(order)
    for token in tokens:
        if "\t" in token or "\n" in token:
            raise DataError(f"token {token!r} contains a tab or newline and cannot be written to a TSV")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\t".join(TSV_HEADER) + "\n")
            f.writelines(f"{i}\t{tokens[i]}\t{int(counts[i])}\t{int(rank[i])}\n" for i in range(len(tokens)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_frequency_tsv(path: str) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """(tokens, counts, rank-ordered ids) from a file written by :func:`write_frequency_tsv`."""
    if not os.path.isfile(path):
        raise DataError(f"frequency file {path!r} does not exist")
    tokens, counts, ranks = [], [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header) != TSV_HEADER:
            raise DataError(f"{path}:1: header is {header}, expected {list(TSV_HEADER)}")
        for number, line in enumerate(f, 2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise DataError(f"{path}:{number}: expected 4 tab-separated fields, got {len(fields)}")
            try:
                token_id, count, rank = int(fields[0]), int(fields[2]), int(fields[3])
            except ValueError:
                raise DataError(f"{path}:{number}: id, count and rank must be integers, got {fields}") from None
            if token_id != len(tokens):
                raise DataError(f"{path}:{number}: id {token_id} out of order (expected {len(tokens)})")
            tokens.append(fields[1])
            counts.append(count)
            ranks.append(rank)
    rank = np.array(ranks, dtype=np.int64)
    if not np.array_equal(np.sort(rank), np.arange(rank.size)):
        raise DataError(f"{path}: the rank column is not a permutation of 0..{rank.size - 1}")
    order = np.empty_like(rank)
    order[rank] = np.arange(rank.size)
    return tokens, np.array(counts, dtype=np.int64), order

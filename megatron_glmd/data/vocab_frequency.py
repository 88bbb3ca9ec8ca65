"""Token-id frequencies over indexed datasets, and the frequency table (TSV) that carries them.

Counting streams each dataset's memory-mapped ``.bin`` in chunks with ``numpy.bincount``:
memory is O(V + chunk), never O(corpus). Several processes count disjoint chunks; the main
process adds their count vectors. The ranking and the kept set are compression's business
(``megatron_glmd.compress.ranking``); this module writes the ranking it is given.

The table is a TSV, one row per id in id order: ``id  token  count  rank  role`` with ``role``
one of ``special`` (a special token: protected, never a mapping target), ``protected`` (a listed
token, e.g. a verbalizer) or ``ordinary``. It is written with the ``csv`` module's ``excel-tab``
dialect: a token holding a tab, a newline or a ``"`` is quoted (``"`` doubled inside), so
``csv.reader(f, dialect="excel-tab")`` and ``pandas.read_csv(path, sep="\t")`` read every row
with their defaults. (pandas turns a token spelled like one of its missing-value markers, e.g.
``null`` or ``NaN``, into NaN unless given ``keep_default_na=False``; quoting cannot prevent that.)
"""
from __future__ import annotations

import csv
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .errors import DataError
from .indexed_dataset import IndexedDataset, open_datasets

DEFAULT_CHUNK_TOKENS = 1 << 24
_BLOCK_TOKENS = 1 << 18
TSV_HEADER = ("id", "token", "count", "rank", "role")
ROLES = ("special", "protected", "ordinary")


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
    """Ids of the pieces listed one per line in ``path`` (UTF-8; blank lines ignored)."""
    if not os.path.isfile(path):
        raise DataError(f"protected-tokens file {path!r} does not exist")
    ids = []
    with open(path, "rb") as f:   # decoded line by line, so that an error names its line
        for number, raw in enumerate(f, 1):
            try:
                token = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}: not UTF-8 text") from None
            if not token:
                continue
            try:
                ids.append(token_to_id(token))
            except DataError:
                raise DataError(f"{path}:{number}: token {token!r} is not in the tokenizer's vocabulary") from None
    return ids


@dataclass
class FrequencyTable:
    tokens: List[str]
    counts: np.ndarray   # int64 [v]
    order: np.ndarray    # int64 [v]: ids in rank order
    roles: List[str]     # one of ROLES per id

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def special_ids(self) -> List[int]:
        return [i for i, role in enumerate(self.roles) if role == "special"]

    @property
    def protected_ids(self) -> List[int]:
        """Special and listed tokens: the ids that rank first and are always kept."""
        return [i for i, role in enumerate(self.roles) if role != "ordinary"]


def _roles(vocab_size: int, special_ids: Iterable[int], protected_ids: Iterable[int]) -> List[str]:
    roles = ["ordinary"] * vocab_size
    for role, ids in (("protected", protected_ids), ("special", special_ids)):
        for i in ids:
            if not 0 <= int(i) < vocab_size:
                raise DataError(f"{role} token id {int(i)} is outside the vocabulary [0, {vocab_size})")
            roles[int(i)] = role
    return roles


def _check_protected_rank_first(order: np.ndarray, roles: Sequence[str], where: str) -> None:
    protected = {i for i, role in enumerate(roles) if role != "ordinary"}
    if set(int(i) for i in order[:len(protected)]) != protected:
        raise DataError(f"{where}: the special and protected tokens must take the first {len(protected)} ranks")


def write_frequency_tsv(path: str, tokens: Sequence[str], counts: np.ndarray, order: np.ndarray, *,
                        special_ids: Iterable[int] = (), protected_ids: Iterable[int] = ()) -> None:
    """Atomically write the table (see the module docstring), one row per id in id order."""
    order = np.asarray(order, dtype=np.int64)
    if not len(tokens) == len(counts) == order.size:
        raise DataError(f"{path}: {len(tokens)} tokens, {len(counts)} counts and {order.size} ranks differ in number")
    roles = _roles(len(tokens), special_ids, protected_ids)
    _check_protected_rank_first(order, roles, path)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            plain = csv.writer(f, dialect="excel-tab", lineterminator="\n")
            # A lone carriage return is not in the line terminator, so the minimal quoting would
            # leave it bare; such rows quote their strings.
            quoted = csv.writer(f, dialect="excel-tab", lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
            plain.writerow(TSV_HEADER)
            for i, token in enumerate(tokens):
                writer = quoted if "\r" in token else plain
                writer.writerow((i, token, int(counts[i]), int(rank[i]), roles[i]))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _parse_row(path: str, line: int, fields: List[str], expected_id: int):
    if len(fields) != len(TSV_HEADER):
        raise DataError(f"{path}:{line}: expected {len(TSV_HEADER)} tab-separated fields, got {len(fields)}")
    try:
        token_id, count, rank = int(fields[0]), int(fields[2]), int(fields[3])
    except ValueError:
        raise DataError(f"{path}:{line}: id, count and rank must be integers, got {fields}") from None
    if token_id != expected_id:
        raise DataError(f"{path}:{line}: id {token_id} out of order (expected {expected_id})")
    if count < 0:
        raise DataError(f"{path}:{line}: count must be non-negative, got {count}")
    if fields[4] not in ROLES:
        raise DataError(f"{path}:{line}: role must be one of {', '.join(ROLES)}, got {fields[4]!r}")
    return fields[1], count, rank, fields[4]


def read_frequency_tsv(path: str) -> FrequencyTable:
    """The table written by :func:`write_frequency_tsv`; errors name the file and line."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: frequency table does not exist")
    tokens, counts, ranks, roles = [], [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, dialect="excel-tab")
        try:
            header = next(reader, [])
            if tuple(header) != TSV_HEADER:
                raise DataError(f"{path}:1: header is {header}, expected {list(TSV_HEADER)} "
                                "(rerun tools/count_vocab_freq.py)")
            for fields in reader:
                row = _parse_row(path, reader.line_num, fields, len(tokens))
                for column, value in zip((tokens, counts, ranks, roles), row):
                    column.append(value)
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: {exc}") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
    if not tokens:
        raise DataError(f"{path}: the table has no rows")
    rank = np.array(ranks, dtype=np.int64)
    if not np.array_equal(np.sort(rank), np.arange(rank.size)):
        raise DataError(f"{path}: the rank column is not a permutation of 0..{rank.size - 1}")
    order = np.empty_like(rank)
    order[rank] = np.arange(rank.size)
    _check_protected_rank_first(order, roles, path)
    return FrequencyTable(tokens, np.array(counts, dtype=np.int64), order, roles)

"""Memory-mapped indexed dataset: ``PREFIX.bin`` (tokens) + ``PREFIX.idx`` (boundaries).

``PREFIX.bin`` holds every token of every document back to back, ``uint16`` when the
vocabulary has at most 65536 ids, ``uint32`` otherwise. ``PREFIX.idx`` (little endian):

=======  ==========================  ==============================================
offset   field                       meaning
=======  ==========================  ==============================================
0        8 bytes ``GLMDIDX1``        magic
8        uint32 version (= 1)
12       uint32 token itemsize       2 (uint16) or 4 (uint32)
16       uint64 vocab_size           ids in ``.bin`` are ``< vocab_size``
24       uint64 num_sentences  S
32       uint64 num_documents  D
40       int64[S + 1]                token offset where sentence i starts (last = total)
...      int64[D + 1]                index of the first sentence of document d (last = S)
=======  ==========================  ==============================================

Both files are only read through ``numpy.memmap``: opening a dataset costs O(1) memory.
A writer produces both under temporary names and renames them into place at the end.
"""
from __future__ import annotations

import os
import struct
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import DataError

MAGIC = b"GLMDIDX1"
VERSION = 1
_HEADER = struct.Struct("<8sIIQQQ")


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id of a ``vocab_size`` vocabulary."""
    if vocab_size < 1:
        raise DataError(f"vocab size must be positive, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise DataError(f"vocab size {vocab_size} does not fit in uint32 token ids")


def bin_path(prefix: str) -> str:
    return f"{prefix}.bin"


def idx_path(prefix: str) -> str:
    return f"{prefix}.idx"


class IndexedDatasetWriter:
    """Appends documents (lists of sentences of token ids) and finalises atomically.

    Use as a context manager: on an exception the temporary files are removed and no
    ``PREFIX.bin``/``PREFIX.idx`` is created or replaced.
    """

    def __init__(self, prefix: str, vocab_size: int):
        self.prefix = os.fspath(prefix)
        directory = os.path.dirname(os.path.abspath(self.prefix))
        if not os.path.isdir(directory):
            raise DataError(f"output directory {directory!r} does not exist")
        self.vocab_size = int(vocab_size)
        self.dtype = token_dtype(self.vocab_size)
        self._tmp_bin = f"{bin_path(self.prefix)}.tmp-{os.getpid()}"
        self._tmp_idx = f"{idx_path(self.prefix)}.tmp-{os.getpid()}"
        self._bin = open(self._tmp_bin, "wb")
        self._sentence_lengths = []  # list of int64 arrays, one per add call
        self._doc_sentence_counts = []
        self.num_tokens = 0
        self._closed = False

    def add_document(self, sentences: Sequence[Sequence[int]]) -> None:
        """Append one document; empty sentences are dropped, an all-empty document is skipped."""
        arrays = [np.asarray(s, dtype=np.int64) for s in sentences if len(s)]
        if not arrays:
            return
        self.add_token_arrays(np.concatenate(arrays), np.array([len(a) for a in arrays], dtype=np.int64),
                              np.array([len(arrays)], dtype=np.int64))

    def add_token_arrays(self, tokens: np.ndarray, sentence_lengths: np.ndarray,
                         doc_sentence_counts: np.ndarray) -> None:
        """Bulk append: ``tokens`` of many documents, their sentence lengths, sentences per document."""
        tokens = np.asarray(tokens)
        sentence_lengths = np.asarray(sentence_lengths, dtype=np.int64)
        doc_sentence_counts = np.asarray(doc_sentence_counts, dtype=np.int64)
        if int(sentence_lengths.sum()) != tokens.size or int(doc_sentence_counts.sum()) != sentence_lengths.size:
            raise DataError("token, sentence and document counts passed to the dataset writer disagree")
        if (sentence_lengths <= 0).any() or (doc_sentence_counts <= 0).any():
            raise DataError("empty sentences or documents passed to the dataset writer")
        if tokens.size:
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.vocab_size:
                bad = lo if lo < 0 else hi
                raise DataError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._sentence_lengths.append(sentence_lengths)
        self._doc_sentence_counts.append(doc_sentence_counts)
        self.num_tokens += tokens.size

    def finalize(self) -> None:
        """Write the index and move both files into place (``.bin`` first, then ``.idx``)."""
        self._bin.close()
        lengths = np.concatenate(self._sentence_lengths) if self._sentence_lengths else np.zeros(0, np.int64)
        counts = np.concatenate(self._doc_sentence_counts) if self._doc_sentence_counts else np.zeros(0, np.int64)
        sentence_offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=sentence_offsets[1:])
        doc_index = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=doc_index[1:])
        with open(self._tmp_idx, "wb") as f:
            f.write(_HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self.vocab_size, lengths.size, counts.size))
            f.write(sentence_offsets.astype("<i8").tobytes())
            f.write(doc_index.astype("<i8").tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._tmp_bin, bin_path(self.prefix))
        os.replace(self._tmp_idx, idx_path(self.prefix))
        self._closed = True

    def abort(self) -> None:
        if not self._bin.closed:
            self._bin.close()
        for path in (self._tmp_bin, self._tmp_idx):
            if os.path.exists(path):
                os.remove(path)
        self._closed = True

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            if exc_type is None:
                self.finalize()
            else:
                self.abort()


class IndexedDataset:
    """Read-only view of ``PREFIX.bin``/``PREFIX.idx`` through memory maps."""

    def __init__(self, prefix: str):
        self.prefix = os.fspath(prefix)
        ipath, bpath = idx_path(self.prefix), bin_path(self.prefix)
        for path in (ipath, bpath):
            if not os.path.isfile(path):
                raise DataError(f"dataset file {path!r} does not exist")
        idx_size = os.path.getsize(ipath)
        with open(ipath, "rb") as f:
            header = f.read(_HEADER.size)
        if len(header) < _HEADER.size or header[:8] != MAGIC:
            raise DataError(f"{ipath!r} is not a megatron-glmd index file (bad magic)")
        _, version, itemsize, vocab_size, num_sentences, num_docs = _HEADER.unpack(header)
        if version != VERSION:
            raise DataError(f"{ipath!r} has index version {version}, this code reads version {VERSION}")
        if itemsize not in (2, 4):
            raise DataError(f"{ipath!r} declares a token itemsize of {itemsize} bytes (expected 2 or 4)")
        expected = _HEADER.size + 8 * (num_sentences + 1) + 8 * (num_docs + 1)
        if idx_size != expected:
            raise DataError(f"{ipath!r} is {idx_size} bytes, its header implies {expected}: truncated or corrupt")
        self.vocab_size = int(vocab_size)
        self.dtype = np.dtype(np.uint16 if itemsize == 2 else np.uint32)
        self.sentence_offsets = np.memmap(ipath, dtype="<i8", mode="r", offset=_HEADER.size, shape=(num_sentences + 1,))
        self.doc_sentence_index = np.memmap(ipath, dtype="<i8", mode="r", offset=_HEADER.size + 8 * (num_sentences + 1),
                                            shape=(num_docs + 1,))
        self.num_tokens = int(self.sentence_offsets[-1])
        bin_size = os.path.getsize(bpath)
        if bin_size != self.num_tokens * itemsize:
            raise DataError(f"{bpath!r} is {bin_size} bytes, {ipath!r} implies {self.num_tokens * itemsize}: "
                            "the two files do not belong together")
        # np.memmap refuses a zero-length mapping; an empty dataset is rejected by the writer's users.
        self.tokens = (np.memmap(bpath, dtype=self.dtype, mode="r", shape=(self.num_tokens,))
                       if self.num_tokens else np.zeros(0, dtype=self.dtype))

    @property
    def num_documents(self) -> int:
        return self.doc_sentence_index.size - 1

    @property
    def num_sentences(self) -> int:
        return self.sentence_offsets.size - 1

    def __len__(self) -> int:
        return self.num_documents

    def doc_offsets(self) -> np.ndarray:
        """Token offset where each document starts, ``[D + 1]`` (last = total tokens)."""
        return np.asarray(self.sentence_offsets[np.asarray(self.doc_sentence_index)])

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.doc_offsets())

    def document(self, doc: int) -> np.ndarray:
        """Tokens of document ``doc`` (a view into the memory map)."""
        if not 0 <= doc < self.num_documents:
            raise IndexError(f"document {doc} out of range [0, {self.num_documents})")
        start = self.sentence_offsets[self.doc_sentence_index[doc]]
        end = self.sentence_offsets[self.doc_sentence_index[doc + 1]]
        return self.tokens[start:end]

    def sentences(self, doc: int) -> list:
        """Tokens of each sentence of document ``doc``."""
        first, last = int(self.doc_sentence_index[doc]), int(self.doc_sentence_index[doc + 1])
        offs = self.sentence_offsets[first:last + 1]
        return [self.tokens[offs[i]:offs[i + 1]] for i in range(last - first)]


def write_documents(prefix: str, vocab_size: int, documents: Iterable[Sequence[Sequence[int]]]) -> None:
    """Write an iterable of documents (each a list of sentences of ids) as one dataset."""
    with IndexedDatasetWriter(prefix, vocab_size) as writer:
        for doc in documents:
            writer.add_document(doc)


def open_datasets(prefixes: Sequence[str], vocab_size: Optional[int] = None) -> list:
    """Open several datasets; with ``vocab_size`` check each was written for that vocabulary."""
    datasets = [IndexedDataset(p) for p in prefixes]
    if vocab_size is not None:
        for ds in datasets:
            if ds.vocab_size != vocab_size:
                raise DataError(f"dataset {ds.prefix!r} was written for a vocabulary of {ds.vocab_size} ids, "
                                f"the tokenizer has {vocab_size}")
    return datasets

"""Plain text / JSONL corpus → indexed dataset, tokenised by several processes.

Input formats:

* plain text: one document per block of lines separated by one or more blank lines;
  the lines of a block are joined with ``"\\n"``.
* JSONL (``.jsonl``/``.json`` files, or ``input_format="jsonl"``): one JSON object per line,
  the document text under ``json_key``; blank lines are skipped.

Each document is split into sentences by :func:`split_sentences` (or kept whole) and every
sentence is tokenised on its own, so a document's tokens are the concatenation of
``tokenizer.encode(sentence)`` over its sentences. By default (:func:`split_by_default`) documents
are split for GLM's tokenizers, whose blank infilling masks whole sentences ([sMASK]), and kept
whole for a Hugging Face ``tokenizer.json`` (type ``hf``): causal samples use no sentence
boundaries. A byte-level BPE (GLM's GPT-2 BPE, a ``tokenizer.json``) keeps a word's leading space
in the word's own token, so its sentences keep the whitespace before them
(``tokenizer.keeps_leading_whitespace``): a split document then decodes to exactly its text, as a
whole one does. SentencePiece adds its own word-boundary piece to every sentence, so its sentences
are stripped.

The main process reads and validates input (so errors name the file and line), worker processes
tokenise, and the main process writes in input order; the output appears atomically when
everything succeeded.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .errors import DataError
from .indexed_dataset import IndexedDatasetWriter
from .tokenizer import load_tokenizer

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")
_CHUNK_BYTES = 1 << 20


def split_sentences(text: str, keep_whitespace: bool = False) -> List[str]:
    """Split after ``.``, ``!`` or ``?`` (plus closing quotes/brackets) followed by whitespace.

    A deliberately simple rule: abbreviations such as "e.g. x" split too. Sentences are stripped
    and empty ones dropped; with ``keep_whitespace`` a sentence keeps the whitespace before it
    instead (all but the first), so the sentences join back to exactly ``text.strip()``: what a
    byte-level BPE needs, whose tokens carry a word's leading space.
    """
    text = text.strip() if keep_whitespace else text
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end() - (len(match.group()) - len(match.group().rstrip()))
        sentences.append(text[start:end])
        start = end if keep_whitespace else match.end()
    sentences.append(text[start:])
    if keep_whitespace:
        return [s for s in sentences if s.strip()]
    return [s.strip() for s in sentences if s.strip()]


def split_by_default(tokenizer_type: str) -> bool:
    """Whether documents are split into sentences when the caller does not say: not for ``hf``
    (module docstring); ``auto`` never resolves to ``hf`` (:func:`~.tokenizer.load_tokenizer`)."""
    return tokenizer_type != "hf"


def detect_format(path: str, input_format: str) -> str:
    if input_format not in ("auto", "text", "jsonl"):
        raise DataError(f"input format must be auto, text or jsonl, got {input_format!r}")
    if input_format != "auto":
        return input_format
    return "jsonl" if path.endswith((".jsonl", ".json")) else "text"


def _lines(path: str) -> Iterator[Tuple[int, str, int]]:
    """(1-based line number, decoded line, raw byte count) with UTF-8 errors named by line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8"), len(raw)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def iter_documents(path: str, input_format: str = "auto", json_key: str = "text") -> Iterator[Tuple[str, int]]:
    """Yield ``(document text, input bytes consumed)`` of one file; raise :class:`DataError` on bad input."""
    fmt = detect_format(path, input_format)
    count = 0
    if fmt == "jsonl":
        pending = 0
        for number, line, nbytes in _lines(path):
            pending += nbytes
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            if json_key not in record:
                keys = ", ".join(repr(k) for k in list(record)[:10]) or "none"
                raise DataError(f"{path}:{number}: key {json_key!r} missing (keys present: {keys})")
            text = record[json_key]
            if not isinstance(text, str):
                raise DataError(f"{path}:{number}: key {json_key!r} holds {type(text).__name__}, expected a string")
            if text.strip():
                count += 1
                yield text, pending
                pending = 0
    else:
        block: List[str] = []
        pending = 0
        for _, line, nbytes in _lines(path):
            pending += nbytes
            if line.strip():
                block.append(line.rstrip("\r\n"))
            elif block:
                count += 1
                yield "\n".join(block), pending
                block, pending = [], 0
        if block:
            count += 1
            yield "\n".join(block), pending
    if count == 0:
        raise DataError(f"{path}: no documents found (the file is empty or only blank)")


@dataclass
class PreprocessStats:
    documents: int
    sentences: int
    tokens: int
    input_bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / max(self.seconds, 1e-9)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


# --- worker side -------------------------------------------------------------------------------
_worker_tokenizer = None
_worker_split = True


def _init_worker(model_file: str, split: bool, tokenizer_type: str = "auto") -> None:
    global _worker_tokenizer, _worker_split
    _worker_tokenizer = load_tokenizer(model_file, tokenizer_type)
    _worker_split = split


def _tokenize_chunk(chunk: Tuple[List[str], int]):
    """Tokenise a chunk of documents → (tokens, sentence lengths, sentences per document, input bytes)."""
    docs, nbytes = chunk
    sentences, per_doc = [], []
    for text in docs:
        parts = split_sentences(text, _worker_tokenizer.keeps_leading_whitespace) if _worker_split else [text]
        sentences.extend(parts)
        per_doc.append(len(parts))
    encoded = _worker_tokenizer.encode_batch(sentences) if sentences else []
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    tokens = np.fromiter((t for e in encoded for t in e), dtype=np.int64, count=int(lengths.sum()))
    # Drop sentences that encode to nothing, then documents left without sentences.
    doc_of_sentence = np.repeat(np.arange(len(per_doc)), per_doc)
    keep = lengths > 0
    counts = np.bincount(doc_of_sentence[keep], minlength=len(per_doc))
    return tokens, lengths[keep], counts[counts > 0], nbytes


def _chunks(paths: Sequence[str], input_format: str, json_key: str) -> Iterator[Tuple[List[str], int]]:
    docs, nbytes, size = [], 0, 0
    for path in paths:
        for text, consumed in iter_documents(path, input_format, json_key):
            docs.append(text)
            nbytes += consumed
            size += len(text)
            if size >= _CHUNK_BYTES // 4 or len(docs) >= 1024:
                yield docs, nbytes
                docs, nbytes, size = [], 0, 0
    if docs:
        yield docs, nbytes


def preprocess(input_files: Sequence[str], output_prefix: str, tokenizer_model: str, json_key: str = "text",
               workers: int = 1, input_format: str = "auto", split_into_sentences: Optional[bool] = None,
               progress: bool = True, tokenizer_type: str = "auto") -> PreprocessStats:
    """Tokenise ``input_files`` into ``output_prefix.bin``/``.idx``; returns counts and timing.
    ``tokenizer_type``: how ``tokenizer_model`` is read (:func:`~.tokenizer.load_tokenizer`);
    ``split_into_sentences``: None splits as :func:`split_by_default` says for that type."""
    paths = [os.fspath(p) for p in input_files]
    if not paths:
        raise DataError("no input files given")
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"input file {path!r} does not exist")
        detect_format(path, input_format)
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    tokenizer = load_tokenizer(tokenizer_model, tokenizer_type)  # validates the files before any work starts
    if split_into_sentences is None:
        split_into_sentences = split_by_default(tokenizer_type)
    total_bytes = sum(os.path.getsize(p) for p in paths)
    start = time.perf_counter()
    documents = sentences = 0
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenising", disable=not progress)
    pool = None
    try:
        with IndexedDatasetWriter(output_prefix, tokenizer.vocab_size) as writer:
            chunks = _chunks(paths, input_format, json_key)
            if workers == 1:
                _init_worker(tokenizer_model, split_into_sentences, tokenizer_type)
                results = map(_tokenize_chunk, chunks)
            else:
                pool = mp.get_context("spawn").Pool(workers, _init_worker,
                                                    (tokenizer_model, split_into_sentences, tokenizer_type))
                results = pool.imap(_tokenize_chunk, chunks, chunksize=1)
            for tokens, lengths, counts, nbytes in results:
                if counts.size:
                    writer.add_token_arrays(tokens, lengths, counts)
                documents += counts.size
                sentences += lengths.size
                bar.update(nbytes)
            if documents == 0:
                raise DataError(f"no document in {paths} produced any token")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return PreprocessStats(documents, sentences, writer.num_tokens, total_bytes, time.perf_counter() - start)

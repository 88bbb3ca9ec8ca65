"""GLM blank-infilling samples (docs/design.md, "Blank infilling") from a window of text.

A window of ``L`` tokens may span several documents. It is first put in GLM's sample format
(:func:`mark_documents`, as GLM's ``BlockDataset`` does): every document piece is preceded by
[CLS], and a piece that reaches the end of its document is followed by the tokenizer's
end-of-document token (GLM's BPE: ``<|endoftext|>``; the SentencePiece tokenizer has none, so its
documents are marked by their [CLS] alone). Markers are never masked. Three corruption modes:

* ``MODE_MASK``: inside each document piece, span lengths ~ Poisson(λ) truncated to
  ``1..max_span_length`` are drawn until the spans cover at least ``ceil(mask_ratio · n)`` of the
  piece's ``n`` tokens; the spans are placed uniformly at random with at least one unmasked token
  between neighbours and never across a document boundary. Each span becomes one [MASK].
* ``MODE_SMASK``: whole sentences (sentence pieces inside the window) are drawn in random order
  until they cover at least ``ceil(mask_ratio · n)`` of the ``n`` text tokens; each becomes one [sMASK].
* ``MODE_GMASK``: prefix LM. A suffix of ``u`` tokens, ``u`` uniform in
  ``[max(1, ceil(min_suffix_ratio · L)), max(1, L - 1)]``, becomes one [gMASK] (the leading [CLS]
  always stays in the prefix).

Layout: Part A is the marked window with every span replaced by its mask token; Part B appends
the spans in random order, each as ``[sop] + span`` (input) with target ``span + [eop]``.
``position_ids[0]`` is the position in Part A (a Part-B token takes its mask's position),
``position_ids[1]`` is 0 in Part A and ``1..len+1`` inside a Part-B block ([sop] is 1).
``loss_mask`` is 1 on Part B. Total length is ``L + 2·k`` for ``k`` spans; when that exceeds
``seq_length`` the window is cut to ``L - overflow`` tokens (its tail is dropped) and the spans
are drawn again, until it fits. Padding (pad id, position 0, loss 0) fills up to ``seq_length``.

Every special id comes from a :class:`~.tokenizer.SpecialIds` taken from the tokenizer in use.
Everything random comes from a ``numpy.random.Generator`` that the caller seeds, so a sample is
a pure function of (window, seed, sample index).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .errors import DataError
from .tokenizer import SpecialIds

MODE_MASK, MODE_SMASK, MODE_GMASK = 0, 1, 2
MODE_NAMES = ("mask", "smask", "gmask")
Segment = Tuple[int, int]


@dataclass(frozen=True)
class BlankInfillingConfig:
    seq_length: int                                   # padded sample length (Part A + Part B)
    mask_ratio: float = 0.15
    poisson_lambda: float = 3.0
    max_span_length: int = 39
    task_mask: bool = False                           # mix MASK / sMASK / gMASK (GLM 2B/10B)
    mode_probs: Tuple[float, float, float] = (0.5, 0.3, 0.2)
    min_suffix_ratio: float = 0.25
    text_length: int = 0                              # window tokens; 0 means seq_length - 2

    def __post_init__(self):
        if self.seq_length < 4:
            raise DataError(f"seq_length must be at least 4, got {self.seq_length}")
        if not 0.0 < self.mask_ratio <= 0.5:
            raise DataError(f"mask_ratio must be in (0, 0.5], got {self.mask_ratio}")
        if self.poisson_lambda <= 0:
            raise DataError(f"poisson_lambda must be positive, got {self.poisson_lambda}")
        if self.max_span_length < 1:
            raise DataError(f"max_span_length must be >= 1, got {self.max_span_length}")
        if len(self.mode_probs) != 3 or min(self.mode_probs) < 0 or not math.isclose(sum(self.mode_probs), 1.0):
            raise DataError(f"mode_probs must be three non-negative numbers summing to 1, got {self.mode_probs}")
        if not 0.0 < self.min_suffix_ratio < 1.0:
            raise DataError(f"min_suffix_ratio must be in (0, 1), got {self.min_suffix_ratio}")
        if not 0 <= self.text_length <= self.seq_length - 2:
            raise DataError(f"text_length must be in [1, seq_length - 2 = {self.seq_length - 2}] "
                            f"(or 0 for the default), got {self.text_length}")

    @property
    def window_length(self) -> int:
        return self.text_length or self.seq_length - 2


def _span_length(rng: np.random.Generator, lam: float, max_len: int) -> int:
    while True:  # Poisson(λ) truncated to 1..max_len by rejection
        length = int(rng.poisson(lam))
        if 1 <= length <= max_len:
            return length


def _spans_in_piece(rng: np.random.Generator, n: int, cfg: BlankInfillingConfig) -> List[Tuple[int, int]]:
    """Non-adjacent spans inside ``range(n)`` covering at least ``ceil(mask_ratio·n)`` tokens."""
    target = math.ceil(cfg.mask_ratio * n)
    lengths: List[int] = []
    covered = 0
    while covered < target:
        room = n - covered - len(lengths)  # each span after the first needs one gap token before it
        if room < 1:  # cannot happen for mask_ratio <= 0.5 (spans + gaps would exceed half of n)
            break
        length = min(_span_length(rng, cfg.poisson_lambda, cfg.max_span_length), room)
        lengths.append(length)
        covered += length
    lengths = [lengths[i] for i in rng.permutation(len(lengths))]
    free = n - covered - (len(lengths) - 1)
    bars = np.sort(rng.choice(free + len(lengths), size=len(lengths), replace=False))
    spans, before = [], 0
    for bar, length in zip(bars.tolist(), lengths):
        start = bar + before
        spans.append((start, start + length))
        before += length
    return spans


def mark_documents(tokens: np.ndarray, doc_starts: Sequence[int], doc_ends: Sequence[int],
                   sentence_starts: Sequence[int], ids: SpecialIds):
    """GLM's format for a window (module docstring): ``(marked tokens, text segments, sentence starts)``.

    ``doc_starts``: window offsets where a document piece starts (0 implied); ``doc_ends``: offsets
    where a piece ends its document. Segments ``[a, b)`` are the pieces' text in the marked
    window; sentence starts are mapped into the marked window.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = tokens.size
    bounds = sorted(set(int(d) for d in doc_starts if 0 < d < n) | {0}) + [n]
    ends = {int(e) for e in doc_ends}
    sentences = sorted(int(x) for x in sentence_starts)
    parts, segments, mapped, at = [], [], [], 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        parts.append([ids.cls])
        start = at + 1
        parts.append(tokens[a:b])
        segments.append((start, start + b - a))
        mapped.extend(x - a + start for x in sentences if a < x < b)
        at = start + b - a
        if b in ends and ids.eod is not None:
            parts.append([ids.eod])
            at += 1
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]), segments, mapped


def sample_mask_spans(rng, segments: Sequence[Segment], cfg: BlankInfillingConfig):
    spans = []
    for start, end in segments:
        spans.extend((start + a, start + b) for a, b in _spans_in_piece(rng, end - start, cfg))
    return spans


def sample_sentence_spans(rng, segments: Sequence[Segment], sentence_starts: Sequence[int],
                          cfg: BlankInfillingConfig):
    units = []
    for start, end in segments:
        cuts = sorted({start, end} | {int(x) for x in sentence_starts if start < x < end})
        units.extend(zip(cuts[:-1], cuts[1:]))
    target = math.ceil(cfg.mask_ratio * sum(end - start for start, end in segments))
    chosen, covered = [], 0
    for u in rng.permutation(len(units)).tolist():
        if covered >= target:
            break
        chosen.append(units[u])
        covered += units[u][1] - units[u][0]
    return sorted(chosen)
def sample_prefix_span(rng, length: int, cfg: BlankInfillingConfig):
    low = max(1, math.ceil(cfg.min_suffix_ratio * length))
    high = max(low, length - 1)
    suffix = int(rng.integers(low, high + 1))
    return [(length - suffix, length)]


def assemble(tokens: np.ndarray, spans: Sequence[Tuple[int, int]], mask_token: int, rng: np.random.Generator,
             seq_length: int, ids: SpecialIds) -> dict:
    """Part A / Part B sample from sorted, non-overlapping ``spans`` of ``tokens`` (see module doc)."""
    n = len(tokens)
    total = n + 2 * len(spans)
    if total > seq_length:
        raise DataError(f"{n} tokens with {len(spans)} spans need {total} positions, seq_length is {seq_length}")
    input_ids = np.full(seq_length, ids.pad, dtype=np.int64)
    target_ids = np.full(seq_length, ids.pad, dtype=np.int64)
    position_ids = np.zeros((2, seq_length), dtype=np.int64)
    loss_mask = np.zeros(seq_length, dtype=np.float32)
    # Part A
    cursor, out, mask_positions = 0, 0, []
    for start, end in spans:
        input_ids[out:out + start - cursor] = tokens[cursor:start]
        out += start - cursor
        input_ids[out] = mask_token
        mask_positions.append(out)
        out += 1
        cursor = end
    input_ids[out:out + n - cursor] = tokens[cursor:]
    sep = out + n - cursor
    position_ids[0, :sep] = np.arange(sep)
    # Part B, spans in random order
    out = sep
    for s in rng.permutation(len(spans)).tolist():
        start, end = spans[s]
        size = end - start + 1
        input_ids[out] = ids.sop
        input_ids[out + 1:out + size] = tokens[start:end]
        target_ids[out:out + size - 1] = tokens[start:end]
        target_ids[out + size - 1] = ids.eop
        position_ids[0, out:out + size] = mask_positions[s]
        position_ids[1, out:out + size] = np.arange(1, size + 1)
        loss_mask[out:out + size] = 1.0
        out += size
    return {"input_ids": input_ids, "target_ids": target_ids, "position_ids": position_ids,
            "loss_mask": loss_mask, "sep": int(sep), "length": int(out)}


def build_sample(tokens: np.ndarray, segments: Sequence[Segment], sentence_starts: Sequence[int], mode: int,
                 rng: np.random.Generator, cfg: BlankInfillingConfig, ids: SpecialIds) -> dict:
    """One blank-infilling sample of ``cfg.seq_length`` from a marked window (:func:`mark_documents`).

    ``segments`` are the ``[start, end)`` ranges that may be masked (the documents' text);
    ``sentence_starts`` are offsets where sentences begin. Cuts the window's tail until the sample
    fits (module doc).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.size < 1:
        raise DataError("cannot build a blank-infilling sample from an empty window")
    length = min(int(tokens.size), cfg.seq_length - 2)
    while True:
        clipped = [(a, min(b, length)) for a, b in segments if a < length]
        if mode == MODE_MASK:
            spans = sample_mask_spans(rng, clipped, cfg)
        elif mode == MODE_SMASK:
            spans = sample_sentence_spans(rng, clipped, sentence_starts, cfg)
        elif mode == MODE_GMASK:
            spans = sample_prefix_span(rng, length, cfg)
        else:
            raise DataError(f"unknown blank-infilling mode {mode!r}")
        overflow = length + 2 * len(spans) - cfg.seq_length
        if overflow <= 0:
            return assemble(tokens[:length], spans, ids.mode_tokens[mode], rng, cfg.seq_length, ids)
        length -= overflow

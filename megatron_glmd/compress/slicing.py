"""Embedding slicing: from a teacher's word embedding and a frequency table to the artifact.

The steps ``tools/slice_embeddings.py`` runs, each callable (and tested) on its own, so every bad
input is refused before the mapping starts, with a message the CLI prefixes by file or option:

1. :func:`kept_ids_for` — the kept set from the table's ranking and ``r_v`` (or K);
2. :func:`unk_id_for` — the target of the ``unk`` mapping, looked up by its token;
3. :func:`check_teacher_vocabulary` — the checkpoint covers the table's vocabulary (a decoder's
   embedding may have more rows than the tokenizer has ids);
4. :func:`compress_vocabulary` — the token map (bounded memory, :mod:`.token_map`), the
   teacher's sliced output matrix and the summary, as a :class:`~.artifact.VocabCompression`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..data.errors import DataError
from ..data.vocab_frequency import FrequencyTable
from .artifact import VocabCompression, summarize
from .ranking import kept_token_ids, kept_vocab_size
from .token_map import DEFAULT_CHUNK_BYTES, MAPPINGS, map_tokens


def kept_ids_for(table: FrequencyTable, *, ratio: Optional[float] = None,
                 kept_size: Optional[int] = None) -> np.ndarray:
    """The kept ids in rank order: the top ``K`` of the table's ranking, ``K`` given or from ``r_v``."""
    if (ratio is None) == (kept_size is None):
        raise DataError("give exactly one of r_v and K")
    if kept_size is None:
        kept_size = kept_vocab_size(table.vocab_size, ratio)
    elif kept_size > table.vocab_size:
        raise DataError(f"K = {kept_size} exceeds the {table.vocab_size} ids of the frequency table")
    return kept_token_ids(table.order, kept_size, num_protected=len(table.protected_ids))


def unk_id_for(table: FrequencyTable, unk_token: str) -> int:
    """The id of the special token ``unk_token`` in the table."""
    for token_id in table.special_ids:
        if table.tokens[token_id] == unk_token:
            return token_id
    raise DataError(f"no special token {unk_token!r} in the frequency table")


def check_teacher_vocabulary(table: FrequencyTable, vocab_size: int, embedding_rows: Optional[int] = None, *,
                             decoder: bool = False) -> None:
    """The teacher's vocabulary must cover the table's ids; its embedding must have those rows.

    A GLM teacher's ``vocab_size`` is its tokenizer's: it must equal the table's. A decoder's is its
    embedding's row count, which may exceed the tokenizer's ids (Qwen2.5: 152,064 rows for 151,665
    ids): the rows past the table's ids are ones no token id reaches, never ranked, mapped or kept.
    """
    if decoder and vocab_size < table.vocab_size:
        raise DataError(f"vocab_size is {vocab_size}, fewer than the {table.vocab_size} ids of the frequency "
                        "table (a table of another tokenizer?)")
    if not decoder and vocab_size != table.vocab_size:
        raise DataError(f"vocab_size is {vocab_size}, but the frequency table has {table.vocab_size} ids "
                        "(a table of another tokenizer?)")
    if embedding_rows is not None and embedding_rows < vocab_size:
        raise DataError(f"word_embeddings.weight has {embedding_rows} rows, fewer than vocab_size {vocab_size}")


@torch.no_grad()
def compress_vocabulary(embedding: torch.Tensor, table: FrequencyTable, kept_ids: np.ndarray, *,
                        mapping: str = "inner", ratio: Optional[float] = None, unk_id: Optional[int] = None,
                        student_width: Optional[int] = None, device=None,
                        max_chunk_bytes: int = DEFAULT_CHUNK_BYTES, chunk_rows: Optional[int] = None,
                        progress: bool = True, output_matrix: Optional[torch.Tensor] = None,
                        teacher_rows: Optional[int] = None) -> VocabCompression:
    """Token map, sliced teacher matrix and summary for the teacher word embedding ``[rows >= v, h]``:
    only its first ``v`` rows (the table's ids) are read, so the artifact's ``vocab_size`` is ``v``.

    ``student_width``: the width of the student's word embedding (``embedding_size`` when
    factorised, else ``hidden_size``), for the parameters-saved figure. ``output_matrix``: the
    teacher's output layer ``[v(+pad), h]`` when it is not the embedding (an untied decoder's
    ``lm_head``): the teacher decodes with its kept rows, while the token map still compares the
    word embedding's rows (the map replaces the student's *input* ids and targets). ``teacher_rows``:
    the teacher's ``vocab_size`` (a decoder's embedding rows, ``>= v``), recorded in the summary so a
    run can refuse another teacher; a full-vocabulary student shares those rows (config/run.py
    ``check_teacher_model``), so the rows saved are counted from them.
    """
    if mapping not in MAPPINGS:
        raise DataError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
    check_teacher_vocabulary(table, table.vocab_size, embedding.shape[0])
    if teacher_rows is not None and teacher_rows < table.vocab_size:
        raise DataError(f"teacher_rows {teacher_rows} is fewer than the {table.vocab_size} ids of the frequency table")
    embedding = embedding[:table.vocab_size]
    kept = torch.from_numpy(np.asarray(kept_ids, dtype=np.int64))
    token_map = map_tokens(embedding, kept, mapping=mapping, special_ids=table.special_ids,
                           protected_ids=table.protected_ids, unk_id=unk_id, max_chunk_bytes=max_chunk_bytes,
                           chunk_rows=chunk_rows, device=device, progress=progress)
    summary = summarize(kept, token_map, table.counts, table.tokens, mapping=mapping, ratio=ratio,
                        student_width=student_width, full_rows=teacher_rows)
    summary["teacher"] = {"hidden_size": int(embedding.shape[1]), "dtype": str(embedding.dtype).replace("torch.", "")}
    if teacher_rows is not None:
        summary["teacher"]["vocab_rows"] = int(teacher_rows)
    output = embedding
    if output_matrix is not None:
        if output_matrix.shape[0] < table.vocab_size or output_matrix.shape[1] != embedding.shape[1]:
            raise DataError(f"the output layer is {tuple(output_matrix.shape)}, the word embedding "
                            f"{tuple(embedding.shape)}: not one teacher's")
        output = output_matrix[:table.vocab_size]
    return VocabCompression(kept, token_map, output[kept].clone(), summary)

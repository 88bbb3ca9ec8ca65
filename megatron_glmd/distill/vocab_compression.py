"""Vocabulary compression at run time (docs/design.md, "Vocabulary compression").

A run whose ``vocab_compression.artifact`` names a directory written by tools/slice_embeddings.py
trains a student of the artifact's K tokens against a teacher of the full vocabulary v:

- the student's word embedding (and tied output) has K rows, padded to a multiple of 128·TP like
  any vocabulary, so the real columns of its logits are K: ``model.vocab_size`` is K (given as v,
  or for a decoder as the teacher's embedding rows >= v, it is derived, and the run says so);
- a decoder teacher's embedding may have more rows than the tokenizer has ids (Qwen2.5: 152,064
  for 151,665): the artifact covers the v ids, every input and target id is below v (so the
  ``[v]`` tables below cover them), and the rows past v are never read;
- the first stage maps the student's input ids through ``student_ids()`` (original id → student
  row, a ``[v]`` table on the engine's device); the teacher reads the ids unmapped;
- the teacher's last stage decodes with this TP rank's rows of the sliced matrix ``W_vT[kept_ids]``
  (padded like the student's vocabulary), so shard r of both logits covers the same kept tokens
  in the same order and ``kernels.softmax_kl`` runs unchanged;
- hard-label targets (a compressed student pre-trained from scratch, ``loss.hard_label_weight``,
  the held-out blank-infilling loss) go through the same table, and evaluation counts the held-out
  targets outside the kept set (:class:`~.objective.Objective`).

Special ids are protected when the artifact is made: kept, and mapped to themselves (SentencePiece's
0..9 are the lowest ids, so they stay student rows 0..9). Each check runs before any process group
exists and stops the run with one line naming the file and the field. The artifact is copied into
the run's ``save_dir`` before its first checkpoint is published, so every checkpoint of a compressed
student carries it (and ``tools/export_checkpoint.py`` exports it beside the weights).
"""
from __future__ import annotations

import dataclasses
import filecmp
import os
import shutil
from typing import Optional, Tuple

from ..atomic_io import atomic_directory
from ..compress.artifact import SUMMARY_FILE, VocabCompression, load_artifact
from ..compress.ranking import special_token_ids
from ..config import ConfigError, ModelConfig, RunConfig
from ..convert.glmd_checkpoint import VOCAB_COMPRESSION_DIR
from ..data.errors import DataError

FIELD = "vocab_compression.artifact"


def load_run_artifact(cfg: RunConfig, vocab_size: Optional[int] = None, tokens=None) -> VocabCompression:
    """The run's artifact, checked (against the tokenizer when ``vocab_size``/``tokens`` are given)."""
    try:
        return load_artifact(cfg.vocab_compression.artifact, vocab_size=vocab_size, tokens=tokens)
    except DataError as e:
        raise ConfigError(f"{FIELD}: {e}") from None


def prepare_run(cfg: RunConfig) -> Tuple[RunConfig, Optional[VocabCompression], Optional[str]]:
    """``(cfg with model.vocab_size = K, artifact, a line saying what the run does)``; ``(cfg, None,
    None)`` without compression. Checks the student's vocabulary and the copy in ``save_dir``."""
    if cfg.vocab_compression.artifact is None:
        return cfg, None, None
    vc = load_run_artifact(cfg)
    v, k = vc.vocab_size, vc.kept_size
    summary = os.path.join(cfg.vocab_compression.artifact, SUMMARY_FILE)
    n, derived = cfg.model.vocab_size, ""
    # The full vocabulary: v, or a decoder's embedding rows past it (Qwen2.5: 152,064 rows, 151,665 ids).
    full = n == v or (cfg.model.is_decoder and n > v)
    if full and n != k:
        cfg = dataclasses.replace(cfg, model=cfg.model.replace(vocab_size=k))
        what = f"embedding rows for {v} ids, the full vocabulary" if n > v else "the full vocabulary"
        derived = f" (model.vocab_size {n} is {what}: the student's is derived as K)"
    elif n != k:
        rows = f", or the teacher's embedding rows >= {v}," if cfg.model.is_decoder else ""
        raise ConfigError(f"model.vocab_size={n}, but {summary} keeps kept_size={k} of "
                          f"vocab_size={v} ids: set model.vocab_size to {k} (or {v}{rows} from which K is derived)")
    check_saved_copy(cfg)
    note = (f"vocabulary compression: the student has K = {k} of {v} ids (artifact {cfg.vocab_compression.artifact}, "
            f"mapping {vc.summary.get('mapping')}){derived}; inputs mapped, the teacher decodes with its sliced matrix")
    return cfg, vc, note


def check_tokenizer(cfg: RunConfig, tokenizer) -> None:
    """The artifact was made for the run's tokenizer, and keeps every special id the samples use."""
    vc = load_run_artifact(cfg, vocab_size=tokenizer.vocab_size, tokens=tokenizer.tokens())
    dropped = [i for i in special_token_ids(tokenizer) if int(vc.token_map[i]) != i]
    if dropped:
        raise ConfigError(f"{FIELD}: {os.path.join(cfg.vocab_compression.artifact, 'tensors.safetensors')}: "
                          f"kept_ids: the tokenizer's special id {dropped[0]} is not kept (the samples use it)")


def check_teacher(teacher: ModelConfig, vc: VocabCompression, where: str) -> None:
    """The teacher is the one the artifact was sliced for: its vocabulary v and its width. A decoder
    teacher's ``vocab_size`` is its embedding's rows, which may exceed v (Qwen2.5): the rows past
    v are ones no token id reaches, and the teacher decodes with the sliced matrix."""
    v, width = vc.vocab_size, vc.teacher_output_weight.shape[1]
    rows = vc.summary.get("teacher", {}).get("vocab_rows")   # recorded by tools/slice_embeddings.py
    if teacher.vocab_size < v or (teacher.vocab_size != v and not teacher.is_decoder):
        raise ConfigError(f"{where}: teacher vocab_size={teacher.vocab_size}, but {FIELD} was made for "
                          f"vocab_size={v} (a teacher of another vocabulary?)")
    if rows is not None and teacher.vocab_size != rows:
        raise ConfigError(f"{where}: teacher vocab_size={teacher.vocab_size}, but {FIELD} was sliced from a "
                          f"teacher of {rows} embedding rows (another teacher?)")
    if teacher.embedding_size:
        raise ConfigError(f"{where}: embedding_size: a factorised teacher cannot decode with a sliced matrix")
    if teacher.hidden_size != width:
        raise ConfigError(f"{where}: teacher hidden_size={teacher.hidden_size}, but {FIELD}'s "
                          f"teacher_output_weight has {width} columns (sliced from another teacher)")


def check_saved_copy(cfg: RunConfig) -> None:
    """A ``save_dir`` that holds a copy must hold this artifact's (resuming with another one would
    silently change the student's vocabulary)."""
    save_dir = cfg.checkpoint.save_dir
    copy = os.path.join(save_dir, VOCAB_COMPRESSION_DIR, SUMMARY_FILE) if save_dir else None
    if copy and cfg.checkpoint.resume and os.path.isfile(copy) and \
            not filecmp.cmp(copy, os.path.join(cfg.vocab_compression.artifact, SUMMARY_FILE), shallow=False):
        raise ConfigError(f"{copy}: differs from {FIELD}'s summary.json: the checkpoints in {save_dir} "
                          "were trained with another compressed vocabulary")


def keep_copy(artifact: str, save_dir: str) -> None:
    """Copy the artifact to ``save_dir/vocab_compression`` (once; atomically: a sibling temporary
    directory renamed into place). Rank 0 calls it before a checkpoint is published."""
    target = os.path.join(save_dir, VOCAB_COMPRESSION_DIR)
    if os.path.isfile(os.path.join(target, SUMMARY_FILE)) and filecmp.cmp(
            os.path.join(target, SUMMARY_FILE), os.path.join(artifact, SUMMARY_FILE), shallow=False):
        return
    with atomic_directory(target, replace=True) as tmp:
        shutil.copytree(artifact, tmp, dirs_exist_ok=True)

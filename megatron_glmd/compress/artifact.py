"""The vocabulary-compression artifact: what a compressed run needs, in one directory.

``DIR/tensors.safetensors``
    ``kept_ids`` int64 ``[K]``: the kept ids in rank order; student row ``j`` is token ``kept_ids[j]``.
    ``token_map`` int64 ``[v]``: every original id to a kept original id (kept ids to themselves).
    ``teacher_output_weight`` ``[K, h_T]``: the teacher's sliced output matrix ``W_vT[kept_ids]``,
    in the checkpoint's dtype; the teacher decodes with it so both distributions range over the
    same K tokens in the same order (docs/design.md, "Vocabulary compression").
``DIR/summary.json``
    K, ``r_v``, the mapping, corpus coverage of the kept set, the fraction of ids mapped to
    themselves, the student parameters saved, the map's spread, and a fingerprint of the token
    list so a run can refuse an artifact made for another tokenizer.

The directory is written under a temporary name beside ``DIR`` and renamed into place, so a
reader sees a whole artifact or none.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..atomic_io import atomic_directory
from ..config import pad_vocab_size
from ..data.errors import DataError

FORMAT = "megatron-glmd vocabulary compression"
VERSION = 1
TENSORS_FILE = "tensors.safetensors"
SUMMARY_FILE = "summary.json"
TENSOR_NAMES = ("kept_ids", "token_map", "teacher_output_weight")


def tokens_fingerprint(tokens: Sequence[str]) -> str:
    """sha256 of the token list in id order (JSON-encoded, so any character is unambiguous)."""
    return hashlib.sha256(json.dumps(list(tokens), ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass
class VocabCompression:
    kept_ids: torch.Tensor               # int64 [K], rank order
    token_map: torch.Tensor              # int64 [v]
    teacher_output_weight: torch.Tensor  # [K, h_T]
    summary: dict

    @property
    def vocab_size(self) -> int:
        return self.token_map.numel()

    @property
    def kept_size(self) -> int:
        return self.kept_ids.numel()

    def student_ids(self) -> torch.Tensor:
        """int64 ``[v]``: original id → student row (the position of ``token_map[id]`` in ``kept_ids``).
        Student inputs (and hard-label targets) go through it; teacher inputs do not."""
        row = torch.full((self.vocab_size,), -1, dtype=torch.long)
        row[self.kept_ids] = torch.arange(self.kept_size)
        return row[self.token_map]

    def teacher_output_shard(self, tp_rank: int = 0, tp_size: int = 1) -> torch.Tensor:
        """TP rank ``tp_rank``'s rows of the sliced teacher matrix, zero-padded to ``pad(K, 128·TP)``
        like a student vocabulary of K tokens, so teacher shard r and student shard r cover the same
        tokens; the real columns of a shard are ``vocab_shard_real_columns(K, padded, r, TP)``."""
        padded = pad_vocab_size(self.kept_size, tp_size)
        shard = padded // tp_size
        start = tp_rank * shard
        out = self.teacher_output_weight.new_zeros(shard, self.teacher_output_weight.shape[1])
        real = self.teacher_output_weight[start:start + shard]
        out[:real.shape[0]] = real
        return out


def summarize(kept_ids: torch.Tensor, token_map: torch.Tensor, counts, tokens: Sequence[str], *,
              mapping: str, ratio: Optional[float], student_width: Optional[int] = None,
              full_rows: Optional[int] = None) -> dict:
    """The summary fields computed from the map and the corpus counts. ``full_rows``: the vocabulary
    rows of a full-vocabulary student, the teacher's (a decoder's may exceed v); v when not given."""
    v, k = token_map.numel(), kept_ids.numel()
    counts = torch.as_tensor(counts, dtype=torch.float64)
    total = float(counts.sum())
    dropped = torch.ones(v, dtype=torch.bool)
    dropped[kept_ids] = False
    spread = None
    if bool(dropped.any()):
        per_target = torch.bincount(token_map[dropped], minlength=v)
        target = int(per_target.argmax())
        spread = {"target_id": target, "target_token": tokens[target], "dropped_ids": int(per_target[target]),
                  "fraction_of_dropped": round(float(per_target[target]) / int(dropped.sum()), 6)}
    rows_saved = pad_vocab_size(full_rows or v, 1) - pad_vocab_size(k, 1)
    return {
        "vocab_size": v, "kept_size": k, "ratio": ratio, "mapping": mapping,
        "corpus_coverage": round(float(counts[kept_ids].sum()) / total, 6) if total > 0 else None,
        "self_mapped_fraction": round(float((token_map == torch.arange(v)).double().mean()), 6),
        "map_spread": spread,
        "student_embedding_rows_saved": rows_saved,
        "student_parameters_saved": rows_saved * student_width if student_width else None,
        "student_embedding_width": student_width,
        "tokens_sha256": tokens_fingerprint(tokens),
    }


def write_artifact(path: str, artifact: VocabCompression, *, overwrite: bool = False) -> str:
    """Write ``artifact`` to the directory ``path`` atomically; returns ``path``."""
    from safetensors.torch import save_file
    path = os.path.abspath(path)
    check_output_path(path, overwrite=overwrite)
    with atomic_directory(path, replace=overwrite) as tmp:
        tensors = {"kept_ids": artifact.kept_ids, "token_map": artifact.token_map,
                   "teacher_output_weight": artifact.teacher_output_weight}
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()},
                  os.path.join(tmp, TENSORS_FILE), metadata={"format": FORMAT, "version": str(VERSION)})
        with open(os.path.join(tmp, SUMMARY_FILE), "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "version": VERSION, **artifact.summary}, f, indent=2, ensure_ascii=False)
            f.write("\n")
    return path


def check_output_path(path: str, *, overwrite: bool = False) -> None:
    """Refuse an output whose parent is missing, or that exists (unless ``overwrite``)."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(f"{path}: the parent directory {parent} does not exist")
    if os.path.exists(path) and not overwrite:
        raise DataError(f"{path}: already exists (pass overwrite to replace it)")
    if os.path.exists(path) and not os.path.isfile(os.path.join(path, SUMMARY_FILE)):
        raise DataError(f"{path}: exists and is not a vocabulary-compression artifact; not replacing it")


def _fail(path: str, name: str, message: str):
    raise DataError(f"{os.path.join(path, name)}: {message}")


def load_artifact(path: str, *, vocab_size: Optional[int] = None, tokens: Optional[Sequence[str]] = None,
                  device="cpu") -> VocabCompression:
    """Read and check an artifact; with ``vocab_size``/``tokens`` (the run's tokenizer), refuse one
    made for another vocabulary. Every error names the file and the field."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    summary_path, tensors_path = os.path.join(path, SUMMARY_FILE), os.path.join(path, TENSORS_FILE)
    for file in (summary_path, tensors_path):
        if not os.path.isfile(file):
            raise DataError(f"{file}: does not exist (not a vocabulary-compression artifact)")
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        _fail(path, SUMMARY_FILE, f"not valid JSON ({exc})")
    if not isinstance(summary, dict) or summary.get("format") != FORMAT:
        _fail(path, SUMMARY_FILE, f"format: expected {FORMAT!r}")
    if summary.get("version") != VERSION:
        _fail(path, SUMMARY_FILE, f"version: expected {VERSION}, got {summary.get('version')!r}")
    try:
        tensors = load_file(tensors_path, device=str(device))
    except (SafetensorError, OSError) as exc:
        _fail(path, TENSORS_FILE, f"unreadable ({exc})")
    for name in TENSOR_NAMES:
        if name not in tensors:
            _fail(path, TENSORS_FILE, f"{name}: missing")
    kept, token_map, weight = (tensors[name] for name in TENSOR_NAMES)
    v, k = summary.get("vocab_size"), summary.get("kept_size")
    if kept.dtype != torch.long or kept.dim() != 1 or kept.numel() != k:
        _fail(path, TENSORS_FILE, f"kept_ids: expected int64 [{k}] (summary kept_size), got "
                                  f"{kept.dtype} {tuple(kept.shape)}")
    if token_map.dtype != torch.long or token_map.dim() != 1 or token_map.numel() != v:
        _fail(path, TENSORS_FILE, f"token_map: expected int64 [{v}] (summary vocab_size), got "
                                  f"{token_map.dtype} {tuple(token_map.shape)}")
    if weight.dim() != 2 or weight.shape[0] != k:
        _fail(path, TENSORS_FILE, f"teacher_output_weight: expected {k} rows, got {tuple(weight.shape)}")
    kept_cpu, map_cpu = kept.cpu(), token_map.cpu()
    is_kept = torch.zeros(v, dtype=torch.bool)
    if kept_cpu.numel() and (int(kept_cpu.min()) < 0 or int(kept_cpu.max()) >= v):
        _fail(path, TENSORS_FILE, f"kept_ids: an id outside [0, {v})")
    is_kept[kept_cpu] = True
    if int(is_kept.sum()) != k:
        _fail(path, TENSORS_FILE, "kept_ids: duplicate ids")
    if int(map_cpu.min()) < 0 or int(map_cpu.max()) >= v or not bool(is_kept[map_cpu].all()):
        _fail(path, TENSORS_FILE, "token_map: maps an id to a token outside the kept set")
    if not torch.equal(map_cpu[kept_cpu], kept_cpu):
        _fail(path, TENSORS_FILE, "token_map: a kept id does not map to itself")
    if vocab_size is not None and vocab_size != v:
        _fail(path, SUMMARY_FILE, f"vocab_size: {v}, but the run's tokenizer has {vocab_size} ids")
    if tokens is not None and summary.get("tokens_sha256") != tokens_fingerprint(tokens):
        _fail(path, SUMMARY_FILE, "tokens_sha256: made for another tokenizer (the token lists differ)")
    return VocabCompression(kept, token_map, weight, summary)

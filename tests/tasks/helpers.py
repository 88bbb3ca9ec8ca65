"""Shared helpers of the task tests: hand-written jsonl files and checks of GLM's sample layout."""
from __future__ import annotations

import json

import numpy as np


def write_jsonl(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return str(path)


def check_single_layout(sample, tok, left: str, right: str, target_id: int) -> None:
    """[CLS] left [MASK] right | [sop] with the [sop] at (mask, 1) and the target there (SentencePiece: no [eod])."""
    ids, m, sep = sample["input_ids"], sample["mask_position"], sample["sep"]
    assert ids[0] == tok.cls_id and ids[m] == tok.mask_id
    assert ids[1:m].tolist() == (tok.encode(left) if left else [])
    assert ids[m + 1:sep].tolist() == (tok.encode(right) if right else [])
    assert ids[sep] == tok.sop_id and sample["length"] == sep + 1
    assert (ids[sep + 1:] == tok.pad_id).all()
    assert sample["position_ids"][:, sep].tolist() == [m, 1]
    assert sample["position_ids"][0, :sep].tolist() == list(range(sep))
    assert not sample["position_ids"][1, :sep].any() and not sample["position_ids"][:, sep + 1:].any()
    assert sample["target_ids"][sep] == target_id and sample["loss_mask"][sep] == 1
    assert sample["loss_mask"].sum() == 1


def check_candidate_layout(sample, k: int, tok, left: str, right: str, candidate_ids) -> None:
    """Candidate k: [CLS] left [MASK] right | [sop] candidate, targets candidate [eop], positions (mask, 1..)."""
    ids, sep, length = sample["input_ids"][k], sample["sep"][k], sample["length"][k]
    m = 1 + len(tok.encode(left) if left else [])
    assert ids[0] == tok.cls_id and ids[m] == tok.mask_id
    assert ids[1:m].tolist() == (tok.encode(left) if left else [])
    assert ids[m + 1:sep].tolist() == (tok.encode(right) if right else [])
    n = len(candidate_ids)
    assert length == sep + n + 1
    assert ids[sep:length].tolist() == [tok.sop_id, *candidate_ids]
    assert sample["target_ids"][k][sep:length].tolist() == [*candidate_ids, tok.eop_id]
    assert sample["position_ids"][k][:, sep:length].tolist() == [[m] * (n + 1), list(range(1, n + 2))]
    assert np.array_equal(sample["loss_mask"][k], (np.arange(len(ids)) >= sep) & (np.arange(len(ids)) < length))

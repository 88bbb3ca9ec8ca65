"""Cloze examples as GLM samples: the same fields as the engine's blank-infilling data
(``input_ids``, ``position_ids [2, s]``, ``target_ids``, ``loss_mask``, ``sep``, ``length``), laid out
as GLM's task code lays them out (docs/design.md, "Blank infilling" and "The two stages").

Part A is ``[CLS] + left + [MASK] + right + [eod]``, where left/right are the pattern rendered
around its [MASK] and encoded as two strings, and ``[eod]`` is the tokenizer's end-of-document
token when it has one (GLM's BPE: ``<|endoftext|>``, the 'eos' GLM's task code appends); a
SentencePiece vocabulary has none and marks a text by its [CLS] alone, as its pre-training data does.

* **Single-token** (:func:`encode_single`): Part B is the lone ``[sop]`` at index ``sep``, with
  2-D position ``(mask_position, 1)``. GLM reads the [MASK]'s prediction there (its
  ``GLMForSingleTokenCloze`` takes the logits at ``sep``), because a GLM is trained to predict a
  span from its [sop], never at the [MASK] in Part A. ``target_ids[sep]`` is the verbalizer token
  of the example's target (pad if it has none); ``loss_mask`` is 1 at ``sep``.
* **Multi-token** (:func:`encode_candidates`): one sample per candidate, built by
  :func:`megatron_glmd.data.blank_infilling.assemble` from the text with the candidate in place of
  the [MASK] and the candidate as the one span: Part B is ``[sop] + candidate``, targets
  ``candidate + [eop]``, ``loss_mask`` 1 on them. The context is cut once, for the longest candidate,
  so every candidate sees the same Part A.

Every special id comes from the tokenizer (``cls_id``, ``mask_id``, ``sop_id``, ``eop_id``,
``pad_id``, ``eod_id``). A whitespace right before [MASK] moves to the answer (see
``ClozeTask.answer_prefix``). The two sides are encoded separately so that the [MASK] falls on a
token boundary whatever the tokenizer; a SentencePiece model starts each with its word-boundary
piece, so a right side such as "." may begin with a lone "▁" (GPT-2's BPE adds nothing).
Inputs too long for ``seq_length`` lose tokens from the end of their shortenable fields, longest
field first; one that cannot be made to fit raises DataError naming where the example came from.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..data.blank_infilling import assemble
from ..data.errors import DataError
from ..data.tokenizer import special_ids
from .task import ClozeExample, ClozeTask


def special_id_set(tokenizer) -> set:
    names = ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id", "smask_id", "gmask_id", "sop_id", "eop_id",
             "dblock_id", "eod_id")
    return {getattr(tokenizer, n) for n in names if getattr(tokenizer, n, None) is not None}


def verbalizer_token_ids(task: ClozeTask, tokenizer) -> List[int]:
    """The one token id of each label's word, in label order ([] for a multi-token task).

    A word is encoded as it appears in the filled pattern (with ``task.answer_prefix``). DataError,
    naming where the word was given, if it is several tokens, a special token, or shared by two labels.
    """
    ids: List[int] = []
    specials = special_id_set(tokenizer)
    for k, word in enumerate(task.verbalizer):
        pieces = tokenizer.encode(task.answer_prefix + word)
        if len(pieces) != 1:
            shown = [tokenizer.decode([p]) for p in pieces]
            raise DataError(f"{task.word_where(k)}: the word {word!r} is {len(pieces)} tokens {shown} in this "
                            "vocabulary; a verbalizer word must be exactly one token")
        if pieces[0] in specials:
            raise DataError(f"{task.word_where(k)}: the word {word!r} encodes to special token id {pieces[0]}")
        if pieces[0] in ids:
            other = task.labels[ids.index(pieces[0])]
            raise DataError(f"{task.word_where(k)}: the word {word!r} is the same token as label {other!r}'s")
        ids.append(pieces[0])
    return ids


def protected_token_ids(tasks: Sequence[ClozeTask], tokenizer) -> List[int]:
    """Every verbalizer token id of ``tasks``, sorted and unique: the vocabulary compression's protected
    list (docs/design.md, "Vocabulary compression"). Multi-token tasks add none (their candidates are data)."""
    return sorted({i for task in tasks for i in verbalizer_token_ids(task, tokenizer)})


def _render(task: ClozeTask, values: Dict[str, str]) -> Tuple[str, str]:
    sides: Tuple[List[str], List[str]] = ([], [])
    side = 0
    for piece in task.pattern:
        if piece.kind == "mask":
            side = 1
        else:
            sides[side].append(piece.value if piece.kind == "text" else values[piece.value])
    left, right = "".join(sides[0]), "".join(sides[1])
    return (left.rstrip() if task.answer_prefix else left), right


def _end(tokenizer) -> List[int]:
    eod = getattr(tokenizer, "eod_id", None)
    return [] if eod is None else [eod]


def _overhead(tokenizer) -> int:
    return 3 + len(_end(tokenizer))      # [CLS], [MASK], [eod] if any, and the [sop] of Part B


def encode_context(task: ClozeTask, example: ClozeExample, tokenizer, budget: int) -> Tuple[List[int], List[int]]:
    """Token ids of the pattern left and right of [MASK], at most ``budget`` together."""
    values = dict(example.fields)
    while True:
        left, right = _render(task, values)
        left_ids = tokenizer.encode(left) if left else []
        right_ids = tokenizer.encode(right) if right else []
        over = len(left_ids) + len(right_ids) - budget
        if over <= 0:
            return left_ids, right_ids
        sizes = {name: len(tokenizer.encode(values[name])) for name in task.shorten if values.get(name)}
        if not sizes:
            raise DataError(f"{example.guid}: {len(left_ids) + len(right_ids)} pattern tokens do not fit in "
                            f"{budget} (seq_length less special tokens and the answer) even with "
                            f"{', '.join(task.shorten) or 'no field'} cut away; raise seq_length")
        name = max(sizes, key=sizes.get)
        ids = tokenizer.encode(values[name])
        shorter = tokenizer.decode(ids[:max(0, len(ids) - over)])
        values[name] = shorter if len(shorter) < len(values[name]) else values[name][:-1]


def encode_single(task: ClozeTask, example: ClozeExample, tokenizer, seq_length: int,
                  verbalizer_ids: Sequence[int]) -> dict:
    """One sample of a single-token task (module doc); ``label`` is the example's target (-1: none)."""
    left, right = encode_context(task, example, tokenizer, seq_length - _overhead(tokenizer))
    part_a = [tokenizer.cls_id, *left, tokenizer.mask_id, *right, *_end(tokenizer)]
    sep, mask_position = len(part_a), 1 + len(left)
    input_ids = np.full(seq_length, tokenizer.pad_id, dtype=np.int64)
    target_ids = np.full(seq_length, tokenizer.pad_id, dtype=np.int64)
    position_ids = np.zeros((2, seq_length), dtype=np.int64)
    loss_mask = np.zeros(seq_length, dtype=np.float32)
    input_ids[:sep] = part_a
    input_ids[sep] = tokenizer.sop_id
    position_ids[0, :sep] = np.arange(sep)
    position_ids[:, sep] = (mask_position, 1)
    loss_mask[sep] = 1.0
    if example.target >= 0:
        target_ids[sep] = verbalizer_ids[example.target]
    return {"input_ids": input_ids, "position_ids": position_ids, "target_ids": target_ids, "loss_mask": loss_mask,
            "sep": sep, "length": sep + 1, "mask_position": mask_position, "label": example.target}


def candidate_token_ids(task: ClozeTask, example: ClozeExample, tokenizer) -> List[List[int]]:
    """Each candidate's token ids as it fills the [MASK] (with ``task.answer_prefix``); DataError if the
    example has none or one encodes to no tokens."""
    if not example.candidates:
        raise DataError(f"{example.guid}: no candidates to fill the [MASK]")
    answers = []
    for k, text in enumerate(example.candidates):
        ids = tokenizer.encode(task.answer_prefix + text)
        if not ids:
            raise DataError(f"{example.guid}: candidate {k} ({text!r}) encodes to no tokens")
        answers.append(ids)
    return answers


def context_budget(example: ClozeExample, room: int, answers: Sequence[Sequence[int]], seq_length: int) -> int:
    """The pattern tokens left when the longest candidate takes its place in ``room`` positions."""
    longest = max(len(a) for a in answers)
    if room - longest < 0:
        raise DataError(f"{example.guid}: a candidate of {longest} tokens does not fit seq_length {seq_length}")
    return room - longest


def encode_candidates(task: ClozeTask, example: ClozeExample, tokenizer, seq_length: int) -> dict:
    """One sample per candidate, stacked on a leading axis ``[n, ...]`` (module doc); ``label`` is the
    index of the right candidate (-1: none)."""
    answers = candidate_token_ids(task, example, tokenizer)
    budget = context_budget(example, seq_length - _overhead(tokenizer), answers, seq_length)
    left, right = encode_context(task, example, tokenizer, budget)
    specials = special_ids(tokenizer)
    samples = []
    for ids in answers:
        tokens = np.array([tokenizer.cls_id, *left, *ids, *right, *_end(tokenizer)], dtype=np.int64)
        start = 1 + len(left)
        samples.append(assemble(tokens, [(start, start + len(ids))], tokenizer.mask_id, np.random.default_rng(0),
                                seq_length, specials))
    return stack_candidates(samples, example.target)


def stack_candidates(samples: Sequence[dict], label: int) -> dict:
    """The samples of one example's candidates on a leading axis ``[n, ...]``, and the example's ``label``."""
    out = {key: np.stack([s[key] for s in samples]) for key in ("input_ids", "position_ids", "target_ids", "loss_mask")}
    for key in ("sep", "length"):
        out[key] = np.array([s[key] for s in samples], dtype=np.int64)
    out["label"] = label
    return out

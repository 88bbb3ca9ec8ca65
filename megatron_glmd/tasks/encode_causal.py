"""Cloze examples as causal samples, for the decoder family (docs/design.md, "The two stages").

A causal model reads left to right: a position sees only what comes before it. The pattern is
rendered around its [MASK] and its two sides encoded as two strings, exactly as for GLM
(:mod:`.encode`: ``left``, ``right``), after a ``[bos]`` when the tokenizer has one (as Llama-3's
prompts begin).

* **Single-token** (:func:`encode_single_causal`): the [MASK] is read at the last position of the
  pattern. The inputs are ``[bos] + left + right``; the task logits are read at the last one,
  ``sep``, whose next-token prediction is the answer: ``target_ids[sep]`` is the verbalizer token of
  the example's target (pad if it has none), ``loss_mask`` is 1 there only. The text right of the
  [MASK] is thus read *before* the answer (one forward pass sees the whole pattern); a pattern that
  ends with its [MASK], as one written for a decoder does, reads as a plain prompt.
* **Multi-token** (:func:`encode_candidates_causal`): one sample per candidate, the candidate in the
  [MASK]'s place: ``[bos] + left + candidate + right`` shifted by one (inputs without the last
  token, targets without the first), ``loss_mask`` 1 on the positions that predict the candidate's
  tokens and the text after it. A candidate's score ``Σ log p`` (:mod:`.scoring`) is then
  ``log p(candidate + right | left)``: the text after the [MASK] judges the candidate, as GLM's
  span sees both sides (the log-probability of ``left`` is the same for every candidate, so leaving
  it out changes neither the argmax nor the softmax over candidates). ``right``'s first token
  closes the candidate as GLM's [eop] does. The context is cut once, for the longest candidate.

The fields are those of the engine's causal samples (:func:`megatron_glmd.data.causal_dataset.causal_sample`:
``input_ids``, ``target_ids``, ``position_ids [s]``, ``loss_mask``, ``length``) plus ``sep`` (the
read position; for candidates, the position that predicts the candidate's first token), so the
task objective reads a decoder's batch as it reads GLM's. ``length`` covers every input token:
L'_sp of the task-distillation stage runs on every non-pad token, as for GLM.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ..data.causal_dataset import causal_sample
from ..data.errors import DataError
from .encode import candidate_token_ids, context_budget, encode_context, stack_candidates
from .task import ClozeExample, ClozeTask


def _prefix(tokenizer) -> List[int]:
    bos = getattr(tokenizer, "bos_id", None)
    return [] if bos is None else [bos]


def encode_single_causal(task: ClozeTask, example: ClozeExample, tokenizer, seq_length: int,
                         verbalizer_ids: Sequence[int]) -> dict:
    """One causal sample of a single-token task (module doc); ``label`` is the example's target (-1: none)."""
    left, right = encode_context(task, example, tokenizer, seq_length - len(_prefix(tokenizer)))
    context = _prefix(tokenizer) + left + right
    if not context:
        raise DataError(f"{example.guid}: the pattern renders to no tokens and the tokenizer has no BOS token: "
                        "a causal model has no position to read the answer at")
    answer = verbalizer_ids[example.target] if example.target >= 0 else tokenizer.pad_id
    sample = causal_sample(np.array(context + [answer]), [0], seq_length, tokenizer.pad_id)
    sep = len(context) - 1
    sample["loss_mask"][:] = 0.0
    sample["loss_mask"][sep] = 1.0
    sample.update(sep=sep, mask_position=sep, label=example.target)
    return sample


def encode_candidates_causal(task: ClozeTask, example: ClozeExample, tokenizer, seq_length: int) -> dict:
    """One causal sample per candidate, stacked on a leading axis ``[n, ...]`` (module doc); ``label`` is
    the index of the right candidate (-1: none)."""
    answers = candidate_token_ids(task, example, tokenizer)
    # [bos] + left + candidate + right is seq_length + 1 tokens at most (the last one is a target only)
    budget = context_budget(example, seq_length + 1 - len(_prefix(tokenizer)), answers, seq_length)
    left, right = encode_context(task, example, tokenizer, budget)
    before = _prefix(tokenizer) + left
    if not before:
        raise DataError(f"{example.guid}: nothing precedes the [MASK] and the tokenizer has no BOS token: a causal "
                        "model has no position to predict a candidate's first token from")
    samples = []
    for ids in answers:
        sample = causal_sample(np.array(before + ids + right), [0], seq_length, tokenizer.pad_id)
        sample["loss_mask"][:len(before) - 1] = 0.0
        sample["sep"] = len(before) - 1
        samples.append(sample)
    return stack_candidates(samples, example.target)

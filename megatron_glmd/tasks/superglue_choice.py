"""SuperGLUE tasks whose answers are several tokens: COPA, WSC, ReCoRD (candidates infilled at [MASK]).

Patterns are GLM's (THUDM/GLM ``tasks/superglue/pvp.py``; COPA pattern 0, WSC pattern 2, ReCoRD 0);
the space before [MASK] goes to the candidate, as GLM writes candidates (" " + text).

* **COPA**: candidates are the two choices, first letter lower-cased and final punctuation
  dropped; ``label`` is the right choice. ``mirror=True`` adds each example with its choices
  swapped (GLM does this for training).
* **WSC**: the pronoun is marked ``*pronoun*`` in the text (its index repaired by ±1 word, as GLM
  does); candidates are ``span1_text`` followed by the line's ``candidates`` (GLM's WSC data with
  negative noun phrases, ``[{"text": ...}]``), duplicates removed. ``label`` is 1 when span 1 is
  the referent; the prediction is "referent" exactly when candidate 0 scores highest. ``target``
  is 0 for referent examples and -1 otherwise (GLM trains the cloze form on those only). A line
  without ``candidates`` has the one candidate and says nothing until scored against others.
* **ReCoRD**: the query's ``@placeholder`` becomes the [MASK]; ``@highlight`` lines become "- "
  items. Evaluation (``train=False``): one example per query, candidates every passage entity
  (sorted, unique), ``answers`` the gold texts, ``label`` the first candidate that is an answer
  (-1: none). Training (``train=True``): one example per gold answer, candidates that answer then
  up to ``max_candidates - 1`` other entities drawn with a generator seeded by (``seed``, line,
  query), ``target`` 0.
"""
from __future__ import annotations

import string
from typing import List

import numpy as np

from ..data.errors import DataError
from .records import (field, int_field, label_index, object_list, read_jsonl, standardize_punctuation, text_field)
from .task import ClozeExample, make_task

COPA = make_task("copa", '"{choice1}" or "{choice2}"? {premise}{joiner} [MASK].', ("0", "1"), shorten=("premise",))
WSC = make_task("wsc", "{text} Question: In the passage above, what does the pronoun '*{pronoun}*' refer to? "
                "Answer: [MASK].", ("false", "true"), shorten=("text",), metrics=("wsc_accuracy",))
RECORD = make_task("record", "{passage} {query_left} [MASK]{query_right}", ("answer",), shorten=("passage",),
                   metrics=("record_em", "record_f1"))
JOINERS = {"cause": " because", "effect": ", so"}


def _text(where, record, name, prefix="") -> str:
    return standardize_punctuation(text_field(where, record, name, prefix))


def _choice(text: str) -> str:
    text = text[:1].lower() + text[1:]
    return text.rstrip(string.punctuation)


def read_copa(path: str, mirror: bool = False) -> List[ClozeExample]:
    out, mirrored = [], []
    for where, r in read_jsonl(path):
        question = text_field(where, r, "question")
        if question not in JOINERS:
            raise DataError(f"{where}: field 'question': expected 'cause' or 'effect', got {question!r}")
        choices = (_choice(_text(where, r, "choice1")), _choice(_text(where, r, "choice2")))
        label = label_index(where, r, "label", COPA.labels)
        premise = _text(where, r, "premise").rstrip(string.punctuation)
        for k, (first, second) in enumerate((choices, choices[::-1])):
            if k and not mirror:
                break
            fields = {"choice1": first, "choice2": second, "premise": premise, "joiner": JOINERS[question]}
            lab = label if k == 0 or label < 0 else 1 - label
            (mirrored if k else out).append(ClozeExample(where + ("#mirror" if k else ""), fields, label=lab,
                                                         target=lab, candidates=(first, second)))
    return out + mirrored


def _mark_pronoun(where: str, text: str, index: int, pronoun: str) -> str:
    words = text.split()
    if not 0 <= index < len(words):
        raise DataError(f"{where}: field 'target.span2_index': {index} is outside the text's {len(words)} words")
    if words[index] != pronoun:
        for offset in (-1, 1):
            if 0 <= index + offset < len(words) and words[index + offset] == pronoun:
                index += offset
                break
    if words[index] != pronoun and words[index].startswith(pronoun):  # "him," -> "him" ","
        words[index:index + 1] = [pronoun, words[index][len(pronoun):]]
    if words[index] != pronoun:
        raise DataError(f"{where}: field 'target.span2_index': word {index} is {words[index]!r}, "
                        f"not the pronoun {pronoun!r}")
    words[index] = f"*{pronoun}*"
    return " ".join(words)


def read_wsc(path: str) -> List[ClozeExample]:
    out = []
    for where, r in read_jsonl(path):
        text = _text(where, r, "text")
        span1 = standardize_punctuation(text_field(where, r, "target.span1_text"))
        pronoun = text_field(where, r, "target.span2_text")
        marked = _mark_pronoun(where, text, int_field(where, r, "target.span2_index"), pronoun)
        label = label_index(where, r, "label", WSC.labels)
        candidates = [span1]
        if field(where, r, "candidates", None) is not None:
            for prefix, c in object_list(where, r, "candidates"):
                cand = standardize_punctuation(text_field(where, c, "text", prefix))
                if cand not in candidates:
                    candidates.append(cand)
        out.append(ClozeExample(where, {"text": marked, "pronoun": pronoun}, label=label,
                                target=0 if label == 1 else -1, candidates=tuple(candidates)))
    return out


def _entities(where: str, r: dict, text: str) -> List[str]:
    found = set()
    for prefix, e in object_list(where, r, "passage.entities"):
        start, end = int_field(where, e, "start", prefix), int_field(where, e, "end", prefix)
        if not 0 <= start <= end < len(text):
            raise DataError(f"{where}: field '{prefix}start': span [{start}, {end}] is outside the passage")
        found.add(standardize_punctuation(text[start:end + 1]))
    return sorted(found)


def read_record(path: str, train: bool = False, max_candidates: int = 10, seed: int = 42) -> List[ClozeExample]:
    out = []
    for line, (where, r) in enumerate(read_jsonl(path)):
        raw = text_field(where, r, "passage.text")
        entities = _entities(where, r, raw)
        passage = standardize_punctuation(raw).replace("@highlight\n", "- ")
        for qi, (prefix, q) in enumerate(object_list(where, r, "qas")):
            query = standardize_punctuation(text_field(where, q, "query", prefix))
            if query.count("@placeholder") != 1:
                raise DataError(f"{where}: field '{prefix}query': needs exactly one @placeholder")
            left, right = query.split("@placeholder")
            fields = {"passage": passage, "query_left": left.rstrip(), "query_right": right}
            answers = []
            for ap, a in object_list(where, q, "answers", prefix) if "answers" in q else ():
                answer = standardize_punctuation(text_field(where, a, "text", ap))
                if answer not in answers:
                    answers.append(answer)
            guid = f"{where}#{prefix[:-1]}"
            if not train:
                label = next((k for k, e in enumerate(entities) if e in answers), -1)
                out.append(ClozeExample(guid, fields, label=label, target=label, candidates=tuple(entities),
                                        answers=tuple(answers)))
                continue
            others = [e for e in entities if e not in answers]
            rng = np.random.default_rng([seed, line, qi])
            for k, answer in enumerate(answers):
                drawn = [others[i] for i in rng.permutation(len(others))[:max_candidates - 1]]
                out.append(ClozeExample(f"{guid}#a{k}", fields, label=0, target=0, candidates=(answer, *drawn),
                                        answers=(answer,)))
    return out

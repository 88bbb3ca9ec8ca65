"""SuperGLUE tasks with single-token verbalizers: BoolQ, CB, RTE, WiC, MultiRC.

Patterns and verbalizers are GLM's (THUDM/GLM ``tasks/superglue/pvp.py``), with the pattern id its
SuperGLUE scripts train with (BoolQ 4, CB 3, RTE 0, WiC 1, MultiRC 0), written as template strings
whose filled text is the concatenation of GLM's pattern parts; the space before [MASK] goes to the
verbalizer word (" Yes", " No", " Maybe", as GLM writes them). Label lists and their order are
GLM's. Text is read as GLM reads it: curly quotes and en dashes made plain; hypotheses and MultiRC
passages and questions lose their final punctuation where GLM's pattern adds its own.

Each reader takes a SuperGLUE jsonl file and returns :class:`ClozeExample` s; a line without a
field, or with a label outside the task's labels, raises DataError ``FILE:LINE: field 'NAME': ...``.
"""
from __future__ import annotations

import string
from typing import List

from .records import int_field, label_index, object_list, read_jsonl, standardize_punctuation, text_field
from .task import ClozeExample, make_task

BOOLQ = make_task("boolq", "Based on the following passage {question}? [MASK]. {passage}", ("false", "true"),
                  ("No", "Yes"), shorten=("question", "passage"))
CB = make_task("cb", "{hypothesis}? [MASK]. {premise}", ("entailment", "contradiction", "neutral"),
               ("Yes", "No", "Maybe"), shorten=("hypothesis", "premise"), metrics=("accuracy", "f1_macro"))
RTE = make_task("rte", '"{hypothesis}" ? [MASK], "{premise}"', ("entailment", "not_entailment"), ("Yes", "No"),
                shorten=("hypothesis", "premise"))
WIC = make_task("wic", "{sentence1} {sentence2} Does {word} have the same meaning in both sentences? [MASK]",
                ("false", "true"), ("No", "Yes"), shorten=("sentence1", "sentence2"))
MULTIRC = make_task("multirc", "{passage}. Question: {question}? Is it {answer}? [MASK].", ("0", "1"), ("No", "Yes"),
                    shorten=("passage",), metrics=("f1a", "em", "accuracy"))


def _text(where, record, name, prefix="") -> str:
    return standardize_punctuation(text_field(where, record, name, prefix))


def _strip_final_punctuation(text: str) -> str:
    return text.rstrip(string.punctuation)


def read_boolq(path: str) -> List[ClozeExample]:
    out = []
    for where, r in read_jsonl(path):
        label = label_index(where, r, "label", BOOLQ.labels)
        out.append(ClozeExample(where, {"passage": _text(where, r, "passage"), "question": _text(where, r, "question")},
                                label=label, target=label))
    return out


def _read_entailment(path: str, task) -> List[ClozeExample]:
    out = []
    for where, r in read_jsonl(path):
        label = label_index(where, r, "label", task.labels)
        fields = {"premise": _text(where, r, "premise"),
                  "hypothesis": _strip_final_punctuation(_text(where, r, "hypothesis"))}
        out.append(ClozeExample(where, fields, label=label, target=label))
    return out


def read_cb(path: str) -> List[ClozeExample]:
    return _read_entailment(path, CB)


def read_rte(path: str) -> List[ClozeExample]:
    return _read_entailment(path, RTE)


def read_wic(path: str) -> List[ClozeExample]:
    out = []
    for where, r in read_jsonl(path):
        label = label_index(where, r, "label", WIC.labels)
        fields = {"sentence1": _text(where, r, "sentence1"), "sentence2": _text(where, r, "sentence2"),
                  "word": text_field(where, r, "word")}
        out.append(ClozeExample(where, fields, label=label, target=label))
    return out


def read_multirc(path: str) -> List[ClozeExample]:
    """One example per answer option; ``group`` (``FILE:LINE/QUESTION-IDX``) is the unit of MultiRC's EM."""
    out = []
    for where, r in read_jsonl(path):
        passage = _strip_final_punctuation(_text(where, r, "passage.text").rstrip())
        for qp, q in object_list(where, r, "passage.questions"):
            question = _strip_final_punctuation(_text(where, q, "question", qp).rstrip())
            group = f"{where}/{int_field(where, q, 'idx', qp)}"
            for ap, a in object_list(where, q, "answers", qp):
                label = label_index(where, a, "label", MULTIRC.labels, prefix=ap)
                fields = {"passage": passage, "question": question, "answer": _text(where, a, "text", ap)}
                out.append(ClozeExample(f"{where}#{ap[:-1]}", fields, label=label, target=label, group=group))
    return out

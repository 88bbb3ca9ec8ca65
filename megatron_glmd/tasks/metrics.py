"""Task metrics as fractions in [0, 1], as SuperGLUE defines them, and :func:`compute_metrics` for a task.

* accuracy;
* macro-F1 (CB): the mean over classes of ``2·TP / (2·TP + FP + FN)``, over every class that occurs
  among the labels or the predictions (scikit-learn's ``f1_score(average="macro")``);
* MultiRC: F1a, binary F1 of the positive class over all answer options, and EM, the fraction of
  questions whose options are all predicted right;
* ReCoRD: EM and token F1 of the predicted candidate against each gold answer, the best over the
  answers, after SQuAD's normalisation (lower case, punctuation and articles removed, whitespace
  collapsed); a question without answers scores 0.
"""
from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from typing import Dict, Hashable, List, Sequence

from .task import ClozeExample, ClozeTask


def _check(predictions: Sequence, labels: Sequence) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("no examples to score")


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    _check(predictions, labels)
    return sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def f1_macro(predictions: Sequence[int], labels: Sequence[int]) -> float:
    _check(predictions, labels)
    scores = []
    for c in sorted(set(labels) | set(predictions)):
        tp = sum(1 for p, y in zip(predictions, labels) if p == c and y == c)
        fp = sum(1 for p, y in zip(predictions, labels) if p == c and y != c)
        fn = sum(1 for p, y in zip(predictions, labels) if p != c and y == c)
        scores.append(_f1(tp, fp, fn))
    return sum(scores) / len(scores)


def f1_binary(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the ``positive`` class (MultiRC's F1a over all answer options)."""
    _check(predictions, labels)
    tp = sum(1 for p, y in zip(predictions, labels) if p == positive and y == positive)
    fp = sum(1 for p, y in zip(predictions, labels) if p == positive and y != positive)
    fn = sum(1 for p, y in zip(predictions, labels) if p != positive and y == positive)
    return _f1(tp, fp, fn)


def exact_match_by_group(predictions: Sequence[int], labels: Sequence[int], groups: Sequence[Hashable]) -> float:
    """Fraction of groups (MultiRC questions) whose every prediction equals its label."""
    _check(predictions, labels)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups for {len(labels)} labels")
    right: Dict[Hashable, bool] = defaultdict(lambda: True)
    for p, y, g in zip(predictions, labels, groups):
        right[g] = right[g] and p == y
    return sum(right.values()) / len(right)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def best_over_answers(metric, predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Mean over questions of the best ``metric(prediction, answer)`` over that question's answers."""
    _check(predictions, answers)
    return sum(max((metric(p, a) for a in gold), default=0.0) for p, gold in zip(predictions, answers)) / len(answers)


def compute_metrics(task: ClozeTask, examples: Sequence[ClozeExample], predictions: Sequence[int]) -> Dict[str, float]:
    """The task's metrics from the index each example scored highest (verbalizer label or candidate).

    Examples without a label (-1) are left out of accuracy-type metrics (a test split has none);
    ReCoRD scores every question, unanswerable ones as 0.
    """
    _check(predictions, examples)
    labelled = [(p, e) for p, e in zip(predictions, examples) if e.label >= 0]
    preds: List[int] = [p for p, _ in labelled]
    labels: List[int] = [e.label for _, e in labelled]
    out: Dict[str, float] = {}
    for name in task.metrics:
        if name == "accuracy":
            out[name] = accuracy(preds, labels)
        elif name == "f1_macro":
            out[name] = f1_macro(preds, labels)
        elif name == "f1a":
            out[name] = f1_binary(preds, labels)
        elif name == "em":
            out[name] = exact_match_by_group(preds, labels, [e.group for _, e in labelled])
        elif name == "wsc_accuracy":   # "span 1 is the referent" exactly when candidate 0 wins
            out["accuracy"] = accuracy([int(p == 0) for p in preds], labels)
        elif name in ("record_em", "record_f1"):
            texts = [e.candidates[p] for p, e in zip(predictions, examples)]
            metric = answer_exact_match if name == "record_em" else token_f1
            out[name[len("record_"):]] = best_over_answers(metric, texts, [e.answers for e in examples])
    return out

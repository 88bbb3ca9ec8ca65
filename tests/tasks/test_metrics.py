"""Task metrics against naive implementations on constructed predictions (CB macro-F1, MultiRC F1a
and EM per question, ReCoRD EM/F1 as the best over the gold answers)."""
import random
import re
import string

import pytest

from megatron_glmd.tasks import ClozeExample, compute_metrics, superglue_task
from megatron_glmd.tasks.metrics import (accuracy, answer_exact_match, best_over_answers, exact_match_by_group,
                                         f1_binary, f1_macro, token_f1)


def _naive_f1_per_class(preds, labels, c):
    confusion = {(p, y): 0 for p in set(preds) | set(labels) for y in set(preds) | set(labels)}
    for p, y in zip(preds, labels):
        confusion[p, y] += 1
    tp = confusion.get((c, c), 0)
    predicted = sum(v for (p, _), v in confusion.items() if p == c)
    actual = sum(v for (_, y), v in confusion.items() if y == c)
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _naive_normalise(text):
    text = re.sub("[" + re.escape(string.punctuation) + "]", "", text.lower())
    return [w for w in text.split() if w not in ("a", "an", "the")]


def _naive_token_f1(pred, gold):
    p, g = _naive_normalise(pred), _naive_normalise(gold)
    common = sum(min(p.count(w), g.count(w)) for w in set(p))
    return 0.0 if common == 0 else 2 * common / (len(p) + len(g))


def test_accuracy_and_cb_macro_f1_match_naive():
    rng = random.Random(0)
    for _ in range(20):
        labels = [rng.randrange(3) for _ in range(25)]
        preds = [rng.randrange(3) for _ in range(25)]
        assert accuracy(preds, labels) == pytest.approx(sum(p == y for p, y in zip(preds, labels)) / 25)
        classes = sorted(set(preds) | set(labels))
        naive = sum(_naive_f1_per_class(preds, labels, c) for c in classes) / len(classes)
        assert f1_macro(preds, labels) == pytest.approx(naive)
    # a class never predicted counts with F1 0; one never seen nor predicted does not count
    assert f1_macro([0, 0, 0, 1], [0, 0, 2, 1]) == pytest.approx((0.8 + 1.0 + 0.0) / 3)


def test_multirc_f1a_and_em_per_question():
    labels = [1, 0, 1, 1, 0, 0, 1]
    preds = [1, 0, 0, 1, 1, 0, 1]
    groups = ["q1", "q1", "q1", "q2", "q2", "q3", "q4"]
    assert f1_binary(preds, labels) == pytest.approx(_naive_f1_per_class(preds, labels, 1))
    assert exact_match_by_group(preds, labels, groups) == pytest.approx(2 / 4)         # q3, q4 all right
    task = superglue_task("multirc")
    examples = [ClozeExample(f"f:{i}", {}, label=y, target=y, group=g) for i, (y, g) in enumerate(zip(labels, groups))]
    out = compute_metrics(task, examples, preds)
    assert out == pytest.approx({"f1a": 0.75, "em": 0.5, "accuracy": 5 / 7})


def test_record_best_over_gold_answers():
    preds = ["the Eiffel Tower!", "Tower of London", "Paris", "Rome"]
    answers = [["Eiffel Tower", "Paris"], ["London Tower"], ["Lyon", "Nice"], []]
    assert answer_exact_match("The  Eiffel, Tower", "eiffel tower") == 1.0
    assert token_f1("Tower of London", "London Tower") == pytest.approx(0.8)
    naive_em = sum(max((float(_naive_normalise(p) == _naive_normalise(a)) for a in gold), default=0.0)
                   for p, gold in zip(preds, answers)) / 4
    naive_f1 = sum(max((_naive_token_f1(p, a) for a in gold), default=0.0) for p, gold in zip(preds, answers)) / 4
    assert best_over_answers(answer_exact_match, preds, answers) == pytest.approx(naive_em) == pytest.approx(0.25)
    assert best_over_answers(token_f1, preds, answers) == pytest.approx(naive_f1) == pytest.approx(0.45)
    task = superglue_task("record")
    examples = [ClozeExample("f:1", {}, candidates=("Paris", "the Eiffel Tower!"), answers=tuple(answers[0])),
                ClozeExample("f:2", {}, candidates=("Tower of London", "x"), answers=tuple(answers[1]), label=-1)]
    assert compute_metrics(task, examples, [1, 0]) == pytest.approx({"em": 0.5, "f1": 0.9})


def test_task_metrics_from_predicted_indices():
    cb = superglue_task("cb")
    examples = [ClozeExample(f"f:{i}", {}, label=y, target=y) for i, y in enumerate([0, 1, 2, 2, -1])]
    out = compute_metrics(cb, examples, [0, 1, 1, 2, 0])         # the unlabelled one is left out
    assert out == pytest.approx({"accuracy": 0.75, "f1_macro": f1_macro([0, 1, 1, 2], [0, 1, 2, 2])})
    wsc = superglue_task("wsc")                                 # "referent" exactly when candidate 0 wins
    examples = [ClozeExample(f"f:{i}", {}, label=y) for i, y in enumerate([1, 1, 0, 0])]
    assert compute_metrics(wsc, examples, [0, 2, 1, 0]) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="3 predictions for 4 labels"):
        compute_metrics(wsc, examples, [0, 1, 2])

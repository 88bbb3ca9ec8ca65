"""The stage-2 task modes on the engine (gloo, under NCCL's rules): the loss curves of teacher
fine-tuning, 2a and 2b (single-token task and COPA with a padded candidate) are the same at every
(TP, PP, DP); ``evaluate`` predicts the same at every layout, equal to a naive argmax of the saved
model run alone, and its metrics are compute_metrics of those predictions, written as JSON."""
import json
import os

import pytest

from megatron_glmd.config.task import load_task_config
from megatron_glmd.tasks import compute_metrics, load_task, read_split
from tests.distill.task_cases import make_tokenizer, write_copa, write_topic_task
from tests.distill.task_runs import assert_curve_matches_reference, run_layouts, task_chain

LAYOUTS = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)]  # (TP, PP, DP)
CURVES = ["finetune", "task_distill", "task_logits", "copa_task_distill", "copa_task_logits"]


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_files")
    return (make_tokenizer(str(root / "tok")), write_topic_task(str(root / "topics")), write_copa(str(root / "copa")))


@pytest.fixture(scope="module")
def chains(task_files, tmp_path_factory):
    return run_layouts(tmp_path_factory, LAYOUTS, task_chain, task_files, "task")


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("curve", CURVES)
def test_task_curves_are_layout_independent(chains, layout, curve):
    assert_curve_matches_reference(chains, layout, curve)


def test_task_runs_train(chains):
    ref = chains[(1, 1, 1)][0]
    for curve in ("task_distill", "task_logits"):
        assert ref[curve][-1] < ref[curve][0], (curve, ref[curve])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_evaluate_predictions_and_metrics(chains, task_files, layout):
    _, topics, _ = task_files
    examples = read_split(load_task_config(topics), "dev")
    reference = chains[(1, 1, 1)][0]
    for result in chains[layout]:
        assert result["predictions"] == reference["predictions"] and len(result["predictions"]) == len(examples)
        expected = compute_metrics(load_task(topics), examples, result["predictions"])
        for name, value in expected.items():
            assert result["metrics"][name] == pytest.approx(value, abs=1e-12), name
        assert "loss" in result["metrics"]
    first = chains[layout][0]
    if "naive_predictions" in first:
        assert first["predictions"] == first["naive_predictions"]
    with open(first["results"], encoding="utf-8") as f:
        written = json.load(f)
    assert written["metrics"] == pytest.approx(first["metrics"]) and written["examples"] == len(examples)
    labels = load_task(topics).labels
    assert [p["prediction"] for p in written["predictions"]] == [labels[p] for p in first["predictions"]]
    assert [p["guid"] for p in written["predictions"]] == [e.guid for e in examples]
    assert os.path.basename(first["results"]) == "eval_dev.json"

"""The task stage for the decoder family (tasks/encode_causal.py) on the engine (gloo, under NCCL's
rules): fine-tuning a decoder teacher, 2a and 2b on a single-token task and 2b on COPA (a padded
candidate) give the same loss curves at (TP, PP, DP) = (1,1,1), (2,1,1), (1,2,1), (2,2,1);
``evaluate`` predicts the same at every layout, equal to the verbalizer argmax of plain prompts run
through the saved model alone."""
import pytest

from tests.distill.task_cases import DECODER_WORDS, make_bpe_tokenizer, write_copa, write_topic_task
from tests.distill.task_runs import assert_curve_matches_reference, decoder_task_chain, run_layouts

LAYOUTS = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1)]  # (TP, PP, DP)
CURVES = ["finetune", "task_distill", "task_logits", "copa_task_logits"]


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder_task_files")
    files = (make_bpe_tokenizer(str(root / "tok")),
             write_topic_task(str(root / "topics"), pattern="{text} This is about [MASK]", words=DECODER_WORDS),
             write_copa(str(root / "copa")))
    return run_layouts(tmp_path_factory, LAYOUTS, decoder_task_chain, files, "decoder_task")


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("curve", CURVES)
def test_decoder_task_curves_are_layout_independent(chains, layout, curve):
    assert_curve_matches_reference(chains, layout, curve)


def test_decoder_task_runs_train(chains):
    ref = chains[(1, 1, 1)][0]
    for curve in ("task_distill", "task_logits"):
        assert ref[curve][-1] < ref[curve][0], (curve, ref[curve])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_decoder_evaluation_equals_plain_prompts(chains, layout):
    reference = chains[(1, 1, 1)][0]
    assert reference["naive_predictions"] == reference["predictions"]
    for result in chains[layout]:
        assert result["predictions"] == reference["predictions"]
        assert result["metrics"] == pytest.approx(reference["metrics"], abs=1e-6)

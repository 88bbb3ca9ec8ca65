"""The stage-2 losses through the engine equal their definitions: 2b's first loss at TP = 1, 2, 4 is a
naive fp64 soft cross-entropy at τ = 1 over the full logits gathered from the TP ranks (single-token
verbalizer logits at the [sop]; COPA's summed candidate log-probabilities with a padded candidate
left out); 2a on task data is the stage-1 distill loss on the same samples (every step)."""
import pytest
import torch

from tests.distill.task_cases import make_tokenizer, write_copa, write_topic_task
from tests.distill.task_runs import distill_equals_stage1, soft_ce_first_step
from tests.distributed import run_distributed


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_files")
    return (make_tokenizer(str(root / "tok")), write_topic_task(str(root / "topics")), write_copa(str(root / "copa")))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_soft_cross_entropy_through_the_engine_is_the_naive_one(task_files, tmp_path, tp):
    for rank, result in enumerate(run_distributed(tp, soft_ce_first_step, str(tmp_path), *task_files)):
        for kind, (engine, naive) in result.items():
            assert naive > 0
            assert engine == pytest.approx(naive, rel=1e-5), (tp, rank, kind)


def test_task_distill_is_the_stage1_loss_on_the_same_batches(task_files, tmp_path):
    result = run_distributed(1, distill_equals_stage1, str(tmp_path), *task_files)[0]
    for kind, (task_curve, stage1_curve) in result.items():
        assert len(task_curve) == 4
        torch.testing.assert_close(torch.tensor(task_curve), torch.tensor(stage1_curve), rtol=1e-6, atol=1e-7,
                                   msg=kind)

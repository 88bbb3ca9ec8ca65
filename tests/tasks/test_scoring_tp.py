"""Task logits and the stage-2 losses on vocab-parallel shards at TP = 1, 2, 4 over gloo (under NCCL's
rules) equal gathering the full logits and indexing them: verbalizer logits, candidate
log-probabilities, the 2b soft cross-entropy and the fine-tuning cross-entropy, values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.parallel import ParallelGrid, pad_vocab_size, vocab_shard_real_columns
from megatron_glmd.tasks import (candidate_log_probs, choice_scores, label_cross_entropy_sum, soft_cross_entropy_sum,
                                 verbalizer_logits)
from tests.distributed import run_distributed

B, S, VOCAB, CHOICES = 3, 7, 1000, 2
POSITIONS = torch.tensor([2, 6, 0])
IDS = torch.tensor([5, 600, 999, 300])          # on every shard at TP 4 (256 ids each), the last real id too
LABELS = torch.tensor([1, -1, 3])
CHOICE_MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def _inputs(padded):
    g = torch.Generator().manual_seed(7)
    student, teacher = (torch.randn(B, S, padded, generator=g) * 3 for _ in range(2))
    cand_student, cand_teacher = (torch.randn(B * CHOICES, S, padded, generator=g) * 3 for _ in range(2))
    target = torch.randint(0, VOCAB, (B * CHOICES, S), generator=g)
    loss_mask = torch.zeros(B * CHOICES, S)
    for n in range(B * CHOICES):
        loss_mask[n, 3:3 + 1 + n % 3] = 1.0          # Part B of 1..3 tokens
    return student, teacher, cand_student, cand_teacher, target, loss_mask


def _rank(rank, world):
    grid = ParallelGrid.build(tp_size=world)
    padded = pad_vocab_size(VOCAB, world)
    student, teacher, cand_student, cand_teacher, target, loss_mask = _inputs(padded)
    width = padded // world
    cut = slice(rank * width, (rank + 1) * width)
    local = student[..., cut].clone().requires_grad_()
    local_c = cand_student[..., cut].clone().requires_grad_()
    end = vocab_shard_real_columns(VOCAB, padded, rank, world)
    task = verbalizer_logits(local, POSITIONS, IDS, grid.tp_group)
    with torch.no_grad():
        teacher_task = verbalizer_logits(teacher[..., cut], POSITIONS, IDS, grid.tp_group)
        teacher_scores = choice_scores(candidate_log_probs(cand_teacher[..., cut], target, loss_mask, grid.tp_group,
                                                           end), CHOICES)
    log_probs = candidate_log_probs(local_c, target, loss_mask, grid.tp_group, end)
    scores = choice_scores(log_probs, CHOICES)
    losses = {"soft": soft_cross_entropy_sum(task, teacher_task), "hard": label_cross_entropy_sum(task, LABELS),
              "soft_choices": soft_cross_entropy_sum(scores, teacher_scores, mask=CHOICE_MASK),
              "hard_choices": label_cross_entropy_sum(scores, torch.tensor([0, 0, 1]), mask=CHOICE_MASK)}
    sum(losses.values()).backward()
    bf16 = verbalizer_logits(student[..., cut].bfloat16(), POSITIONS, IDS, grid.tp_group)
    return {"task": task.detach(), "log_probs": log_probs.detach(), "bf16": bf16, "dtypes": (task.dtype, bf16.dtype),
            "losses": {k: v.item() for k, v in losses.items()}, "grad": local.grad, "grad_c": local_c.grad}


def _reference(padded):
    student, teacher, cand_student, cand_teacher, target, loss_mask = _inputs(padded)
    student = student[..., :VOCAB].double().requires_grad_()
    cand = cand_student[..., :VOCAB].double().requires_grad_()
    task = student[torch.arange(B), POSITIONS][:, IDS]                      # gather everything, then index
    teacher_task = teacher[..., :VOCAB].double()[torch.arange(B), POSITIONS][:, IDS]

    def log_probs(logits):
        lp = F.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return (lp * loss_mask).sum(-1)

    scores = log_probs(cand).view(B, CHOICES)
    teacher_scores = log_probs(cand_teacher[..., :VOCAB].double()).view(B, CHOICES)
    soft = -(F.softmax(teacher_task, -1) * F.log_softmax(task, -1)).sum()
    hard = F.cross_entropy(task[LABELS >= 0], LABELS[LABELS >= 0], reduction="sum")
    soft_choices = hard_choices = 0.0
    for i in range(B):                                                      # padded candidates left out
        n = int(CHOICE_MASK[i].sum())
        soft_choices = soft_choices - (F.softmax(teacher_scores[i, :n], -1) * F.log_softmax(scores[i, :n], -1)).sum()
        hard_choices = hard_choices - F.log_softmax(scores[i, :n], -1)[[0, 0, 1][i]]
    losses = {"soft": soft, "hard": hard, "soft_choices": soft_choices, "hard_choices": hard_choices}
    sum(losses.values()).backward()
    return task.detach(), log_probs(cand).detach(), {k: v.item() for k, v in losses.items()}, student.grad, cand.grad


@pytest.mark.parametrize("world", [1, 2, 4])
def test_sharded_task_logits_and_losses_equal_the_full_vocabulary(world):
    results = run_distributed(world, _rank)
    padded = pad_vocab_size(VOCAB, world)
    task, log_probs, losses, grad, grad_c = _reference(padded)
    full_grad = torch.cat([r["grad"] for r in results], dim=-1)
    full_grad_c = torch.cat([r["grad_c"] for r in results], dim=-1)
    for r in results:                                  # every TP rank holds the whole task logits
        assert r["dtypes"] == (torch.float32, torch.float32)
        torch.testing.assert_close(r["task"].double(), task)
        torch.testing.assert_close(r["log_probs"].double(), log_probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r["bf16"].double(), task.bfloat16().double())
        for name, value in losses.items():
            assert r["losses"][name] == pytest.approx(value, rel=1e-5), name
    torch.testing.assert_close(full_grad[..., :VOCAB].double(), grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(full_grad_c[..., :VOCAB].double(), grad_c, rtol=1e-4, atol=1e-6)
    assert not full_grad[..., VOCAB:].any() and not full_grad_c[..., VOCAB:].any()
    assert torch.count_nonzero(full_grad) == B * len(IDS)          # only the gathered entries get a gradient

"""The stage-2b soft cross-entropy (τ = 1, no τ²) and the fine-tuning cross-entropy against naive sums."""
import math

import pytest
import torch

from megatron_glmd.tasks import label_cross_entropy_sum, soft_cross_entropy_sum


def _naive_soft(student, teacher, tau):
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        z_t = sum(math.exp(t / tau) for t in t_row)
        log_z_s = math.log(sum(math.exp(s / tau) for s in s_row))
        total -= sum(math.exp(t / tau) / z_t * (s / tau - log_z_s) for s, t in zip(s_row, t_row))
    return total


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_soft_cross_entropy_is_the_naive_sum_without_tau_squared(tau):
    g = torch.Generator().manual_seed(3)
    student = (torch.randn(5, 4, generator=g) * 2).requires_grad_()
    teacher = (torch.randn(5, 4, generator=g) * 2).requires_grad_()
    loss = soft_cross_entropy_sum(student, teacher, temperature=tau)
    assert loss.item() == pytest.approx(_naive_soft(student, teacher, tau), rel=1e-6)
    loss.backward()
    expected = (torch.softmax(student / tau, -1) - torch.softmax(teacher / tau, -1)) / tau
    torch.testing.assert_close(student.grad, expected.detach())
    assert teacher.grad is None                                       # the teacher is a constant


def test_masked_candidates_are_left_out():
    student = torch.tensor([[1.0, 2.0, 50.0], [0.5, -1.0, 3.0]])
    teacher = torch.tensor([[0.0, 1.0, -50.0], [2.0, 0.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss = soft_cross_entropy_sum(student, teacher, mask=mask)
    assert loss.item() == pytest.approx(_naive_soft(student[:1, :2], teacher[:1, :2], 1.0)
                                        + _naive_soft(student[1:], teacher[1:], 1.0), rel=1e-6)
    hard = label_cross_entropy_sum(student, torch.tensor([1, -1]), mask=mask)
    assert hard.item() == pytest.approx(-torch.log_softmax(student[0, :2], -1)[1].item(), rel=1e-6)


def test_fine_tuning_cross_entropy_skips_examples_without_a_target():
    student = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]], dtype=torch.bfloat16, requires_grad=True)
    loss = label_cross_entropy_sum(student, torch.tensor([0, 1, -1]))
    assert loss.dtype == torch.float32
    expected = -(math.log(math.e / (math.e + 1)) + math.log(math.e ** 3 / (1 + math.e ** 3)))
    assert loss.item() == pytest.approx(expected, rel=1e-3)
    loss.backward()
    assert student.grad.dtype == torch.bfloat16 and not student.grad[2].any()
    with pytest.raises(ValueError, match="must match"):
        soft_cross_entropy_sum(student, student[:, :1])

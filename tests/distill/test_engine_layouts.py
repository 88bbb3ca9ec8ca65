"""The engine gives the same loss curve at every (TP, PP, DP) layout, in both modes.

Each layout runs in its own set of gloo processes: teacher pre-training for a few steps (its
checkpoint becomes that layout's teacher), then GLMD distillation from it. The curves are
compared with the single-process run, which is the reference.
"""
import os

import pytest
import torch

from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data, valid_data
from tests.distill.layout_curves import assert_curve_matches_reference, run_layouts

LAYOUTS = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2), (2, 2, 1)]  # (TP, PP, DP)


def _pretrain_then_distill(rank, world, tp, pp, workdir):
    teacher_dir = os.path.join(workdir, "teacher")
    teacher = Trainer(run_config("pretrain", tp, pp, teacher_dir), train_data())
    pretrain_records = teacher.train()
    pretrain_curve = [r["loss"] for r in pretrain_records]

    student = Trainer(run_config("distill", tp, pp, os.path.join(workdir, "student"), teacher=teacher_dir),
                      train_data(), valid_data())
    teacher_params = {n: p.detach().clone() for n, p in student.stage.teacher.named_parameters()}
    kl_before = student.evaluate()["kl"]
    distill_records = student.train()
    distill_curve = [r["loss"] for r in distill_records]
    metrics = student.evaluate()
    teacher_unchanged = all(torch.equal(p, teacher_params[n]) for n, p in student.stage.teacher.named_parameters())
    teacher_no_grad = all(p.grad is None and not p.requires_grad for p in student.stage.teacher.parameters())
    in_optimizer = {id(p) for group in student.engine.optimizer.param_groups for p in group["params"]}
    teacher_not_in_optimizer = not any(id(p) in in_optimizer for p in student.stage.teacher.parameters())
    return dict(pretrain=pretrain_curve, distill=distill_curve,
                pretrain_grad_norm=[r["grad_norm"] for r in pretrain_records],
                distill_grad_norm=[r["grad_norm"] for r in distill_records], kl_before=kl_before, metrics=metrics,
                teacher_unchanged=teacher_unchanged, teacher_no_grad=teacher_no_grad,
                teacher_not_in_optimizer=teacher_not_in_optimizer)


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    return run_layouts(tmp_path_factory, LAYOUTS, _pretrain_then_distill, (), "glm")


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("mode", ["pretrain", "distill", "pretrain_grad_norm", "distill_grad_norm"])
def test_loss_curve_matches_single_process(curves, layout, mode):
    assert_curve_matches_reference(curves, layout, mode)


def test_distill_curve_is_real_training(curves):
    ref = curves[(1, 1, 1)][0]["distill"]
    assert ref[-1] < 0.5 * ref[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_teacher_is_frozen_and_outside_the_optimizer(curves, layout):
    for result in curves[layout]:
        assert result["teacher_unchanged"] and result["teacher_no_grad"] and result["teacher_not_in_optimizer"]


def test_distillation_lowers_held_out_kl(curves):
    for layout in LAYOUTS:
        result = curves[layout][0]
        assert result["metrics"]["kl"] < 0.8 * result["kl_before"], (layout, result["kl_before"], result["metrics"])

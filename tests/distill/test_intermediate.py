"""Intermediate-layer MSE ablation: the injected gradient equals the explicit loss's gradient, and the
engine's curve with it is the same across pipeline layouts."""
import pytest
import torch

from megatron_glmd.config import ConfigError, preset
from megatron_glmd.model.partition import StageLayers, uniform_layer_pairs
from megatron_glmd.distill.intermediate import stage_pairs
from megatron_glmd.engine.pipeline import DistillStage
from megatron_glmd.config import run_config_from_dict
from megatron_glmd.engine.trainer import Trainer
from megatron_glmd.parallel import ParallelGrid, initialize_parameters
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed
from tests.model.helpers import glm_batch


def test_layer_pairs_map_uniformly_last_to_last():
    assert uniform_layer_pairs(2, 4) == [(0, 1), (1, 3)]
    assert uniform_layer_pairs(36, 48)[-1] == (35, 47) and uniform_layer_pairs(36, 48)[0] == (0, 0)
    # a student deeper than its teacher
    assert uniform_layer_pairs(4, 3) == [(0, 0), (1, 0), (2, 1), (3, 2)]


def test_pairs_split_across_stages_are_refused():
    student, teacher = preset("tiny-student", num_layers=3), preset("tiny-teacher", num_layers=4)
    # pairs (0,0) (1,1) (2,3): a stage with student [2,3) and teacher [2,4) holds its pair
    assert stage_pairs(student, teacher, StageLayers((2, 3), (2, 4))) == [(2, 3)]
    with pytest.raises(ConfigError, match="student layer 2 and its teacher layer 3 are on different"):
        stage_pairs(student, teacher, StageLayers((2, 3), (1, 3)))


def _stage(student_cfg, teacher_cfg):
    layers = StageLayers((0, student_cfg.num_layers), (0, teacher_cfg.num_layers))
    stage = DistillStage(0, student_cfg, ParallelGrid.single(), layers, teacher_cfg, intermediate_loss=True)
    stage.student.init_weights(1)
    stage.teacher.init_weights(2)
    initialize_parameters(stage.intermediate.named_parameters(prefix="intermediate"), 1)
    return stage


def _main_loss(student_logits, teacher_logits):
    return -(student_logits.float().log_softmax(-1) * teacher_logits.float().softmax(-1)).sum()


def test_auxiliary_gradient_equals_explicit_loss():
    student_cfg = preset("tiny-student", hidden_dropout=0.0, attention_dropout=0.0)
    teacher_cfg = preset("tiny-teacher", hidden_dropout=0.0, attention_dropout=0.0)
    ids, pos, sep, length = glm_batch(student_cfg.vocab_size)
    weight = 0.37

    injected = _stage(student_cfg, teacher_cfg).train()
    injected.intermediate_scale = weight
    _main_loss(*injected((ids, pos, sep, length))).backward()
    assert len(injected.intermediate_sums) == 1

    explicit = _stage(student_cfg, teacher_cfg).eval()  # eval: no injection; hooks still capture states
    valid = (torch.arange(ids.shape[1]) < length.unsqueeze(1)).float()
    logits = explicit((ids, pos, sep, length))
    aux = explicit.intermediate.loss_sum(valid)
    # independent formula: project student layer k, compare with teacher layer j, mean over units
    torch.testing.assert_close(aux, injected.intermediate_sums[0], rtol=1e-6, atol=1e-6)
    (_main_loss(*logits) + weight * aux).backward()

    for (name, p), (_, q) in zip(injected.named_parameters(), explicit.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert injected.intermediate.projections["0"].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in injected.teacher.parameters())


def test_intermediate_loss_value_matches_hand_computation():
    student_cfg = preset("tiny-student", hidden_dropout=0.0, attention_dropout=0.0)
    teacher_cfg = preset("tiny-teacher", hidden_dropout=0.0, attention_dropout=0.0)
    ids, pos, sep, length = glm_batch(student_cfg.vocab_size)
    stage = _stage(student_cfg, teacher_cfg).eval()
    states = {}
    for name, module in [("s0", stage.student.layers["0"]), ("s1", stage.student.layers["1"]),
                         ("t1", stage.teacher.layers["1"]), ("t3", stage.teacher.layers["3"])]:
        module.register_forward_hook(lambda m, i, o, name=name: states.__setitem__(name, o.detach()))
    stage((ids, pos, sep, length))
    valid = (torch.arange(ids.shape[1]) < length.unsqueeze(1)).float()
    got = stage.intermediate.loss_sum(valid)
    proj = stage.intermediate.projections
    expected = sum(((proj[k].weight @ states[s].unsqueeze(-1)).squeeze(-1) - states[t]).pow(2).mean(-1).mul(valid).sum()
                   for k, s, t in (("0", "s0", "t1"), ("1", "s1", "t3")))
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-6)


def _pretrain_teacher(rank, world, teacher_dir):
    Trainer(run_config("pretrain", 1, 1, teacher_dir, iterations=2), train_data()).train()


def _distill_with_intermediate(rank, world, pp, teacher_dir, save_dir):
    values = run_config("distill", 1, pp, save_dir, teacher=teacher_dir, iterations=3).to_dict()
    values["loss"]["intermediate_weight"] = 0.5
    trainer = Trainer(run_config_from_dict(values), train_data())
    return [(r["loss"], r["loss/intermediate"]) for r in trainer.train()]


def test_engine_curve_with_intermediate_loss_is_layout_independent(tmp_path):
    teacher = str(tmp_path / "teacher")
    run_distributed(1, _pretrain_teacher, teacher)
    single = run_distributed(1, _distill_with_intermediate, 1, teacher, str(tmp_path / "pp1"))[0]
    piped = run_distributed(2, _distill_with_intermediate, 2, teacher, str(tmp_path / "pp2"))
    for rank_result in piped:
        torch.testing.assert_close(torch.tensor(rank_result), torch.tensor(single), rtol=2e-4, atol=2e-5)
    assert single[-1][1] < single[0][1]  # the intermediate term is being optimised

"""The decoder family through the engine: the same loss curve at every (TP, PP, DP) layout, in both
modes, on packed causal samples (position_ids cross every pipeline stage; m_p is every token with a
target). As tests/distill/test_engine_layouts.py does for GLM: each layout runs in its own set of
gloo processes, teacher pre-training for a few steps (its checkpoint becomes that layout's teacher),
then GLMD distillation from it and a distillation with the ablation switches (hard labels and
intermediate layers), compared with the single-process run."""
import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.config.sections import DistillLossConfig
from megatron_glmd.data.loader import collate
from megatron_glmd.engine.trainer import Trainer
from megatron_glmd.model.decoder import DecoderStage
from tests.distill.decoder_cases import causal_data, make_corpora, run_config
from tests.distill.layout_curves import assert_curve_matches_reference, run_layouts

LAYOUTS = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1)]  # (TP, PP, DP)


def _pretrain_then_distill(rank, world, tp, pp, workdir, corpus):
    teacher_dir = os.path.join(workdir, "teacher")
    teacher = Trainer(run_config("pretrain", tp, pp, teacher_dir), causal_data(corpus, "train", 32))
    initial = {k: v.detach().clone() for k, v in teacher.stage.student.state_dict().items()}
    pretrain_records = teacher.train()
    student = Trainer(run_config("distill", tp, pp, os.path.join(workdir, "student"), teacher=teacher_dir),
                      causal_data(corpus, "train", 32), causal_data(corpus, "valid", 16))
    teacher_params = {n: p.detach().clone() for n, p in student.stage.teacher.named_parameters()}
    kl_before = student.evaluate()["kl"]
    distill_records = student.train()
    metrics = student.evaluate()
    # The ablation switches on a decoder: + hard-label cross-entropy, + intermediate-layer MSE (the
    # pairs (0, 1), (1, 3) of 2 student / 4 teacher layers share a stage at PP = 2).
    ablation_cfg = run_config("distill", tp, pp, os.path.join(workdir, "ablation"), teacher=teacher_dir)
    ablation_cfg = dataclasses.replace(ablation_cfg, loss=DistillLossConfig(hard_label_weight=0.5,
                                                                            intermediate_weight=1.0))
    ablation = Trainer(ablation_cfg, causal_data(corpus, "train", 32)).train()
    teacher_unchanged = all(torch.equal(p, teacher_params[n]) for n, p in student.stage.teacher.named_parameters())
    in_optimizer = {id(p) for group in student.engine.optimizer.param_groups for p in group["params"]}
    return dict(pretrain=[r["loss"] for r in pretrain_records], distill=[r["loss"] for r in distill_records],
                ablation=[r["loss"] for r in ablation], intermediate=[r["loss/intermediate"] for r in ablation],
                pretrain_grad_norm=[r["grad_norm"] for r in pretrain_records],
                distill_grad_norm=[r["grad_norm"] for r in distill_records], kl_before=kl_before, metrics=metrics,
                teacher_unchanged=teacher_unchanged,
                teacher_not_in_optimizer=not any(id(p) in in_optimizer for p in student.stage.teacher.parameters()),
                families={type(student.stage.student).__name__, type(student.stage.teacher).__name__},
                initial=initial if world == 1 else None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("decoder_corpus"))
    make_corpora(folder)
    return folder


@pytest.fixture(scope="module")
def curves(tmp_path_factory, corpus):
    return run_layouts(tmp_path_factory, LAYOUTS, _pretrain_then_distill, (corpus,), "decoder")


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("mode", ["pretrain", "distill", "pretrain_grad_norm", "distill_grad_norm", "ablation",
                                  "intermediate"])
def test_loss_curve_matches_single_process(curves, layout, mode):
    assert_curve_matches_reference(curves, layout, mode)


def test_curves_are_real_training_of_decoders(curves):
    ref = curves[(1, 1, 1)][0]
    assert ref["families"] == {"DecoderStage"}
    assert ref["pretrain"][-1] < ref["pretrain"][0] - 0.3
    assert ref["distill"][-1] < 0.5 * ref["distill"][0]
    assert ref["ablation"][-1] < ref["ablation"][0] and ref["intermediate"][-1] < ref["intermediate"][0]


def test_first_pretrain_loss_is_cross_entropy_over_m_p(curves, corpus):
    """Step 1's loss is the fp64 next-token cross-entropy of the initial model on the first global batch,
    averaged over every token with a target (m_p), with documents masked apart by position_ids."""
    result = curves[(1, 1, 1)][0]
    cfg = run_config("pretrain", 1, 1, "unused").model
    model = DecoderStage(cfg).eval()
    model.load_state_dict(result["initial"])
    b = collate([causal_data(corpus, "train", 32)[i] for i in range(8)])
    assert (b["position_ids"] == 0).sum() > 8                     # packed: several documents per sample
    with torch.no_grad():
        logits = model(b["input_ids"], b["position_ids"], b["length"])[..., :cfg.vocab_size].double()
    ce = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), b["target_ids"].reshape(-1), reduction="none")
    m_p = b["loss_mask"].reshape(-1).double()
    assert result["pretrain"][0] == pytest.approx(float((ce * m_p).sum() / m_p.sum()), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_teacher_frozen_and_held_out_kl_lowered(curves, layout):
    for result in curves[layout]:
        assert result["teacher_unchanged"] and result["teacher_not_in_optimizer"]
    result = curves[layout][0]
    assert result["metrics"]["kl"] < 0.8 * result["kl_before"], (layout, result["kl_before"], result["metrics"])

"""The engine with a compressed vocabulary (docs/design.md, "Vocabulary compression").

One tiny teacher is pre-trained at (1,1,1) and re-laid out for TP = 2 (bit-identical weights); its
artifact (K = 128 of 300 ids, inner-product map) is built with the compress library. At every
layout a compressed student is pre-trained from scratch (hard labels on mapped targets) and another
is distilled from the teacher. Both loss curves must be layout-independent, and the first step's
losses must equal naive formulas: full teacher logits gathered at the kept ids against student
logits over K (τ², m_p), and the cross-entropy of the student over K at the mapped targets.
"""
import os

import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.compress.artifact import load_artifact
from megatron_glmd.compress.evaluate import kept_token_metrics
from megatron_glmd.convert.glmd_checkpoint import read_checkpoint
from megatron_glmd.convert.reshard import reshard_checkpoint
from megatron_glmd.data.loader import collate
from megatron_glmd.engine.trainer import Trainer
from megatron_glmd.model import GLMStage
from megatron_glmd.model.attention_mask import valid_token_mask
from tests.distill.compressed_cases import build_artifact, compressed
from tests.distill.engine_cases import VOCAB, run_config, train_data, valid_data
from tests.distill.layout_curves import assert_curve_matches_reference
from tests.distributed import run_distributed

LAYOUTS = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1)]  # (TP, PP, DP)
KEPT = 128


def _pretrain_teacher(rank, world, save_dir):
    Trainer(run_config("pretrain", 1, 1, save_dir), train_data()).train()


def _compressed_runs(rank, world, tp, pp, teacher, artifact, workdir):
    scratch = Trainer(compressed(run_config("pretrain", tp, pp, os.path.join(workdir, "scratch")), artifact),
                      train_data())
    scratch_initial = {n: p.detach().clone() for n, p in scratch.stage.student.named_parameters()}
    scratch_records = scratch.train()
    student = Trainer(compressed(run_config("distill", tp, pp, os.path.join(workdir, "student"), teacher=teacher),
                                 artifact), train_data(), valid_data())
    initial = {n: p.detach().clone() for n, p in student.stage.student.named_parameters()}
    kl_before = student.evaluate()["kl"]
    records = student.train()
    single = (tp, pp) == (1, 1)
    return dict(pretrain=[r["loss"] for r in scratch_records], distill=[r["loss"] for r in records],
                pretrain_grad_norm=[r["grad_norm"] for r in scratch_records],
                distill_grad_norm=[r["grad_norm"] for r in records],
                vocab_size=student.cfg.model.vocab_size, kl_before=kl_before, metrics=student.evaluate(),
                initial=initial if single else None, scratch_initial=scratch_initial if single else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compressed")
    teacher = str(root / "teacher")
    run_distributed(1, _pretrain_teacher, teacher)
    reshard_checkpoint(teacher, str(root / "teacher_tp2"), tp=2, pp=1)
    artifact = build_artifact(teacher, str(root / "artifact"), train_data(), KEPT)
    results = {}
    for tp, pp, dp in LAYOUTS:
        results[(tp, pp, dp)] = run_distributed(tp * pp * dp, _compressed_runs, tp, pp,
                                                teacher if tp == 1 else str(root / "teacher_tp2"), artifact,
                                                str(root / f"tp{tp}pp{pp}dp{dp}"))
    return root, teacher, artifact, results


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("curve", ["pretrain", "distill", "pretrain_grad_norm", "distill_grad_norm"])
def test_compressed_loss_curve_is_layout_independent(runs, layout, curve):
    assert_curve_matches_reference(runs[3], layout, curve)


def _first_batch():
    return collate([train_data()[i] for i in range(8)])     # global batch 0 (global_batch_size 8)


def _student(initial, vocab_size, mode="distill"):
    cfg = run_config(mode, 1, 1, None).model.replace(vocab_size=vocab_size)
    model = GLMStage(cfg).eval()
    model.load_state_dict(initial)
    return model


def test_first_distill_loss_equals_the_naive_formula(runs):
    _, teacher_dir, artifact, results = runs
    result, vc = results[(1, 1, 1)][0], load_artifact(artifact)
    assert result["vocab_size"] == KEPT
    config, state = read_checkpoint(teacher_dir)
    rows = state["word_embeddings.weight"]
    state["word_embeddings.weight"] = torch.cat([rows, rows.new_zeros(config.padded_vocab_size() - VOCAB, rows.shape[1])])
    teacher = GLMStage(config).eval()
    teacher.load_state_dict(state)
    b, tau = _first_batch(), 15.0
    with torch.no_grad():
        t = teacher(b["input_ids"], b["position_ids"], b["sep"], b["length"])[..., :VOCAB][..., vc.kept_ids]
        student = _student(result["initial"], KEPT)
        s = student(vc.student_ids()[b["input_ids"]], b["position_ids"], b["sep"], b["length"])[..., :KEPT]
    t, s = t.double() / tau, s.double() / tau
    kl = (F.softmax(t, -1) * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum(-1)
    m_p = valid_token_mask(b["length"], kl.shape[1]).double()
    naive = tau ** 2 * float((kl * m_p).sum() / m_p.sum())
    assert result["distill"][0] == pytest.approx(naive, rel=1e-5, abs=1e-7)


def test_first_scratch_loss_is_cross_entropy_at_mapped_targets(runs):
    result, vc = runs[3][(1, 1, 1)][0], load_artifact(runs[2])
    b = _first_batch()
    with torch.no_grad():
        s = _student(result["scratch_initial"], KEPT, "pretrain")(vc.student_ids()[b["input_ids"]], b["position_ids"], b["sep"],
                                                      b["length"])[..., :KEPT].double()
    ce = F.cross_entropy(s.reshape(-1, KEPT), vc.student_ids()[b["target_ids"]].reshape(-1), reduction="none")
    mask = (b["loss_mask"] > 0).reshape(-1).double()
    assert result["pretrain"][0] == pytest.approx(float((ce * mask).sum() / mask.sum()), rel=1e-5, abs=1e-7)


def test_held_out_metrics_and_the_artifact_in_every_checkpoint(runs):
    root, _, artifact, results = runs
    vc = load_artifact(artifact)
    held_out = collate([valid_data()[i] for i in range(16)])            # eval_iters 2 x global batch 8
    targets = held_out["target_ids"][held_out["loss_mask"] > 0]
    outside = float((vc.token_map[targets] != targets).double().mean())
    assert outside > 0
    for layout, per_rank in results.items():
        for result in per_rank:
            metrics = result["metrics"]
            assert metrics["targets_outside_kept"] == pytest.approx(outside, abs=1e-7), layout
            assert metrics["kl"] < 0.8 * result["kl_before"], (layout, result["kl_before"], metrics)
        tp, pp, dp = layout
        for run in ("scratch", "student"):
            copy = os.path.join(root, f"tp{tp}pp{pp}dp{dp}", run, "vocab_compression")
            assert torch.equal(load_artifact(copy).token_map, vc.token_map), (layout, run)


def test_offline_kept_token_metrics_match_the_engines_evaluation(runs):
    root, teacher_dir, artifact, results = runs
    engine = results[(1, 1, 1)][0]["metrics"]
    offline = kept_token_metrics(str(root / "tp1pp1dp1" / "student"), teacher_dir, artifact, valid_data(), 16)
    assert offline["kl"] == pytest.approx(engine["kl"], rel=1e-4)
    assert offline["student_loss"] == pytest.approx(engine["student_loss"], rel=1e-5)
    assert offline["targets_outside_kept"] == pytest.approx(engine["targets_outside_kept"], abs=1e-7)
    # A full-vocabulary model is gathered at the kept ids: the teacher against itself is exactly 0.
    itself = kept_token_metrics(teacher_dir, teacher_dir, artifact, valid_data(), 16)
    assert itself["kl"] == 0.0 and itself["parameters"] == sum(t.numel() for t in read_checkpoint(teacher_dir)[1].values())

"""Vocabulary compression for the decoder family: tools/slice_embeddings.py on a decoder teacher with
an untied output layer (its sliced matrix must come from ``lm_head``, the token map from the word
embedding), then compressed distillation of a tied decoder student at (1,1,1), (1,2,1), (2,2,1) on
packed causal samples: layout-independent curves, and step 1's loss equal to the naive formula
(full teacher logits gathered at the kept ids against the student's K logits, τ², m_p).

The same teacher with more embedding rows than its tokenizer has ids (Qwen2.5's 152,064 for 151,665,
here 520 for 300; the extra rows random) gives the same artifact, and a student configured with the
teacher's row count derives K: its runs at (1,1,1) and (2,1,1) follow the same curve, and the
offline kept-token figures (compress/evaluate.py, the padded teacher unsplit) equal the engine's."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.compress.artifact import load_artifact
from megatron_glmd.compress.evaluate import kept_token_metrics
from megatron_glmd.compress.ranking import rank_vocabulary
from megatron_glmd.config.run import VocabCompressionConfig
from megatron_glmd.config.sections import DistillLossConfig
from megatron_glmd.convert import write_checkpoint
from megatron_glmd.convert.glmd_checkpoint import VOCAB_ROWS, read_checkpoint
from megatron_glmd.convert.reshard import reshard_checkpoint
from megatron_glmd.data.indexed_dataset import IndexedDataset
from megatron_glmd.data.loader import collate
from megatron_glmd.data.vocab_frequency import write_frequency_tsv
from megatron_glmd.engine.trainer import Trainer
from megatron_glmd.model.decoder import DecoderStage
from tests.distill.decoder_cases import EOD, PAD, VOCAB, causal_data, make_corpora, run_config
from tests.distributed import run_distributed
from tools import slice_embeddings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAYOUTS = [(1, 1, 1), (1, 2, 1), (2, 2, 1)]  # (TP, PP, DP)
KEPT = 128
SPECIALS = [PAD, 1, EOD]
ROWS = 520          # the padded teacher's embedding rows: pad(520) = 640 at TP 1, 768 at TP 2 (300 ids: 384, 512)
PADDED_LAYOUTS = [(1, 1, 1), (2, 1, 1)]


def _pretrain_teacher(rank, world, save_dir, corpus):
    Trainer(run_config("pretrain", 1, 1, save_dir), causal_data(corpus, "train", 32)).train()


def _student_config(tp, pp, workdir, teacher, artifact, vocab_size=VOCAB):
    cfg = run_config("distill", tp, pp, os.path.join(workdir, "student"), teacher=teacher)
    # τ = 1 keeps the fp32 loss value's cancellation error (issue 15, item 1) far below the tolerance.
    return dataclasses.replace(cfg, vocab_compression=VocabCompressionConfig(artifact=artifact),
                               loss=DistillLossConfig(temperature=1.0), model=cfg.model.replace(vocab_size=vocab_size))


def _compressed_distill(rank, world, tp, pp, teacher, artifact, workdir, corpus, vocab_size=VOCAB):
    student = Trainer(_student_config(tp, pp, workdir, teacher, artifact, vocab_size),
                      causal_data(corpus, "train", 32), causal_data(corpus, "valid", 16))
    initial = {k: v.detach().clone() for k, v in student.stage.student.state_dict().items()}
    kl_before = student.evaluate()["kl"]
    records = student.train()
    return dict(distill=[r["loss"] for r in records], grad_norm=[r["grad_norm"] for r in records],
                vocab_size=student.cfg.model.vocab_size, kl_before=kl_before, metrics=student.evaluate(),
                initial=initial if world == 1 else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder_compressed")
    corpus = str(root / "corpus")
    os.makedirs(corpus)
    make_corpora(corpus)
    teacher = str(root / "teacher")
    run_distributed(1, _pretrain_teacher, teacher, corpus)
    reshard_checkpoint(teacher, str(root / "teacher_tp2"), tp=2, pp=1)
    counts = np.bincount(np.asarray(IndexedDataset(os.path.join(corpus, "train")).tokens), minlength=VOCAB)
    write_frequency_tsv(str(root / "freq.tsv"), [f"t{i}" for i in range(VOCAB)], counts,
                        rank_vocabulary(counts, SPECIALS), special_ids=SPECIALS)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "slice_embeddings.py"), "--teacher", teacher,
                           "--frequencies", str(root / "freq.tsv"), "--kept", str(KEPT), "--output",
                           str(root / "artifact"), "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    artifact = str(root / "artifact")
    results = {}
    for tp, pp, dp in LAYOUTS:
        results[(tp, pp, dp)] = run_distributed(tp * pp * dp, _compressed_distill, tp, pp,
                                                teacher if tp == 1 else str(root / "teacher_tp2"), artifact,
                                                str(root / f"tp{tp}pp{pp}dp{dp}"), corpus)
    return corpus, teacher, artifact, results


def test_the_sliced_matrix_is_the_untied_output_layer(runs):
    _, teacher, artifact, _ = runs
    config, state = read_checkpoint(teacher)
    assert not config.tie_word_embeddings and not torch.equal(state["lm_head"], state["word_embeddings.weight"])
    vc = load_artifact(artifact)
    assert vc.kept_size == KEPT and vc.kept_ids[:3].tolist() == SPECIALS
    assert torch.equal(vc.teacher_output_weight, state["lm_head"][vc.kept_ids])


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("curve", ["distill", "grad_norm"])
def test_compressed_decoder_curve_is_layout_independent(runs, layout, curve):
    reference = runs[3][(1, 1, 1)][0][curve]
    for rank, result in enumerate(runs[3][layout]):
        assert result["vocab_size"] == KEPT
        torch.testing.assert_close(torch.tensor(result[curve]), torch.tensor(reference), rtol=2e-4, atol=2e-4,
                                   msg=f"{curve} curve of layout {layout}, rank {rank}")


def _naive_first_loss(result, teacher_dir, artifact, corpus):
    """Step 1's loss from an unsplit teacher and the student's initial weights, in fp64 softmaxes: the
    teacher's full logits (all its rows, extra ones included) gathered at the kept ids against the
    student's K logits of the mapped inputs, KL at τ = 1 averaged over m_p."""
    vc = load_artifact(artifact)
    config, state = read_checkpoint(teacher_dir)
    pad_rows = config.padded_vocab_size() - config.vocab_size
    for name in ("word_embeddings.weight", "lm_head"):
        state[name] = torch.cat([state[name], state[name].new_zeros(pad_rows, state[name].shape[1])])
    teacher = DecoderStage(config).eval()
    teacher.load_state_dict(state)
    student_cfg = _student_config(1, 1, "unused", teacher_dir, artifact).model.replace(vocab_size=KEPT)
    student = DecoderStage(student_cfg).eval()
    student.load_state_dict(result["initial"])
    b = collate([causal_data(corpus, "train", 32)[i] for i in range(8)])
    with torch.no_grad():
        t = teacher(b["input_ids"], b["position_ids"], b["length"])[..., :config.vocab_size][..., vc.kept_ids].double()
        s = student(vc.student_ids()[b["input_ids"]], b["position_ids"], b["length"])[..., :KEPT].double()
    kl = (F.softmax(t, -1) * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum(-1)
    m_p = b["loss_mask"].double()
    return float((kl * m_p).sum() / m_p.sum())


def test_first_loss_equals_the_naive_formula(runs):
    corpus, teacher_dir, artifact, results = runs
    result = results[(1, 1, 1)][0]
    assert result["distill"][0] == pytest.approx(_naive_first_loss(result, teacher_dir, artifact, corpus),
                                                 rel=1e-5, abs=1e-7)


def test_compressed_distillation_lowers_held_out_kl(runs):
    for layout, per_rank in runs[3].items():
        result = per_rank[0]
        assert result["metrics"]["kl"] < 0.8 * result["kl_before"], (layout, result["kl_before"], result["metrics"])


# ---------------------------------------------------------------- a teacher with more rows than ids
def _pad_teacher(teacher, target, tp):
    """``teacher`` with ROWS rows in its word embedding and ``lm_head``: the rows past VOCAB random and
    large (no token id reaches them; read by mistake, they would change every figure)."""
    config, state = read_checkpoint(teacher)
    generator = torch.Generator().manual_seed(11)
    for name in VOCAB_ROWS:
        extra = 10 * torch.randn(ROWS - VOCAB, state[name].shape[1], generator=generator)
        state[name] = torch.cat([state[name], extra.to(state[name].dtype)])
    return write_checkpoint(target, config.replace(vocab_size=ROWS), state, tp=tp)


@pytest.fixture(scope="module")
def padded(runs, tmp_path_factory):
    corpus, teacher, _, _ = runs
    root = tmp_path_factory.mktemp("decoder_compressed_padded")
    teachers = {tp: _pad_teacher(teacher, str(root / f"teacher_tp{tp}"), tp) for tp in (1, 2)}
    freq = os.path.join(os.path.dirname(runs[2]), "freq.tsv")
    assert slice_embeddings.main(["--teacher", teachers[2], "--frequencies", freq, "--kept", str(KEPT),
                                  "--output", str(root / "artifact"), "--device", "cpu", "--quiet"]) == 0
    artifact = str(root / "artifact")
    results = {layout: run_distributed(layout[0], _compressed_distill, layout[0], 1, teachers[layout[0]], artifact,
                                       str(root / "tp{}pp{}dp{}".format(*layout)), corpus, ROWS)
               for layout in PADDED_LAYOUTS}
    return teachers, artifact, results, root


def test_extra_teacher_rows_leave_the_artifact_unchanged(runs, padded):
    reference, artifact = load_artifact(runs[2]), load_artifact(padded[1], vocab_size=VOCAB)
    assert artifact.vocab_size == VOCAB and artifact.summary["teacher"]["vocab_rows"] == ROWS
    for name in ("kept_ids", "token_map", "teacher_output_weight"):
        assert torch.equal(getattr(artifact, name), getattr(reference, name)), name


@pytest.mark.parametrize("layout", PADDED_LAYOUTS)
@pytest.mark.parametrize("curve", ["distill", "grad_norm"])
def test_padded_teacher_curve_is_the_unpadded_ones(runs, padded, layout, curve):
    """The student configured with the teacher's ROWS derives K; its curve is the layout- and
    padding-independent one of the unpadded teacher's (1,1,1) run."""
    reference = runs[3][(1, 1, 1)][0][curve]
    for rank, result in enumerate(padded[2][layout]):
        assert result["vocab_size"] == KEPT
        torch.testing.assert_close(torch.tensor(result[curve]), torch.tensor(reference), rtol=2e-4, atol=2e-4,
                                   msg=f"{curve} curve of layout {layout}, rank {rank}")


def test_padded_teacher_first_loss_equals_the_naive_formula(runs, padded):
    corpus = runs[0]
    teachers, artifact, results, _ = padded
    result = results[(1, 1, 1)][0]
    assert result["distill"][0] == pytest.approx(_naive_first_loss(result, teachers[1], artifact, corpus),
                                                 rel=1e-5, abs=1e-7)


def test_padded_teacher_offline_figures_equal_the_engines(runs, padded):
    teachers, artifact, results, root = padded
    engine = results[(1, 1, 1)][0]["metrics"]
    offline = kept_token_metrics(str(root / "tp1pp1dp1" / "student"), teachers[1], artifact,
                                 causal_data(runs[0], "valid", 16), 16)
    # As tests/compress/test_evaluate_decoder.py: fp32 logits, errors of order 1e-6 relative.
    assert offline["kl"] == pytest.approx(engine["kl"], rel=1e-4)
    assert offline["student_loss"] == pytest.approx(engine["student_loss"], rel=1e-5)
    assert offline["targets_outside_kept"] == pytest.approx(engine["targets_outside_kept"], abs=1e-7)
    assert 0 < offline["targets_outside_kept"] < 1

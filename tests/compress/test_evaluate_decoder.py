"""compress/evaluate.py's held-out figures over the kept tokens for the decoder family (the decoder
quickstart's comparison table): an untied decoder teacher, its artifact sliced from ``lm_head`` by
the compress library, and a tied compressed decoder student distilled at (1,1,1). The offline
figures (unsplit, fp64 softmaxes) must equal the engine's own evaluation of the same student on the
same held-out samples, and the teacher measured against itself must be at KL 0: the teacher decodes
with the kept rows of its output layer, not of its word embedding."""
import dataclasses
import os

import numpy as np
import pytest
import torch

from megatron_glmd.compress.artifact import write_artifact
from megatron_glmd.compress.evaluate import kept_token_metrics
from megatron_glmd.compress.ranking import rank_vocabulary
from megatron_glmd.compress.slicing import compress_vocabulary, kept_ids_for
from megatron_glmd.config.run import VocabCompressionConfig
from megatron_glmd.config.sections import DistillLossConfig
from megatron_glmd.convert.glmd_checkpoint import EMBEDDING, read_checkpoint
from megatron_glmd.data.indexed_dataset import IndexedDataset
from megatron_glmd.data.vocab_frequency import read_frequency_tsv, write_frequency_tsv
from megatron_glmd.engine.trainer import Trainer
from tests.distill.decoder_cases import EOD, PAD, VOCAB, causal_data, make_corpora, run_config
from tests.distributed import run_distributed

KEPT = 128
EVAL_SAMPLES = 16     # eval_iters 2 x global batch 8 (decoder_cases.run_config)


def _pretrain(rank, world, save_dir, corpus):
    Trainer(run_config("pretrain", 1, 1, save_dir), causal_data(corpus, "train", 32)).train()


def _distil(rank, world, save_dir, teacher, artifact, corpus):
    cfg = run_config("distill", 1, 1, save_dir, teacher=teacher)
    cfg = dataclasses.replace(cfg, vocab_compression=VocabCompressionConfig(artifact=artifact),
                              loss=DistillLossConfig(temperature=1.0))
    trainer = Trainer(cfg, causal_data(corpus, "train", 32), causal_data(corpus, "valid", EVAL_SAMPLES))
    trainer.train()
    return trainer.evaluate()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder_kept_metrics")
    corpus, teacher = str(root / "corpus"), str(root / "teacher")
    os.makedirs(corpus)
    make_corpora(corpus)
    run_distributed(1, _pretrain, teacher, corpus)
    counts = np.bincount(np.asarray(IndexedDataset(os.path.join(corpus, "train")).tokens), minlength=VOCAB)
    specials = [PAD, 1, EOD]
    write_frequency_tsv(str(root / "freq.tsv"), [f"t{i}" for i in range(VOCAB)], counts,
                        rank_vocabulary(counts, specials), special_ids=specials)
    table = read_frequency_tsv(str(root / "freq.tsv"))
    _, state = read_checkpoint(teacher)
    artifact = compress_vocabulary(state[EMBEDDING], table, kept_ids_for(table, kept_size=KEPT),
                                   output_matrix=state["lm_head"], progress=False)
    artifact_dir = write_artifact(str(root / "artifact"), artifact)
    engine = run_distributed(1, _distil, str(root / "student"), teacher, artifact_dir, corpus)[0]
    return root, teacher, artifact_dir, engine, corpus


def test_offline_figures_equal_the_engines_evaluation(run):
    root, teacher, artifact, engine, corpus = run
    offline = kept_token_metrics(str(root / "student"), teacher, artifact, causal_data(corpus, "valid", EVAL_SAMPLES),
                                 EVAL_SAMPLES)
    # fp32 logits (offline: fp64 softmaxes; engine: the fused fp32 kernel) — a relative error of
    # order 1e-6 per token, far below these bounds; a wrong mask, target or row would be off by O(1).
    assert offline["kl"] == pytest.approx(engine["kl"], rel=1e-4)
    assert offline["student_loss"] == pytest.approx(engine["student_loss"], rel=1e-5)
    assert offline["targets_outside_kept"] == pytest.approx(engine["targets_outside_kept"], abs=1e-7)
    assert 0 < offline["targets_outside_kept"] < 1
    config, state = read_checkpoint(str(root / "student"))
    assert config.vocab_size == KEPT and offline["parameters"] == sum(t.numel() for t in state.values())


def test_the_untied_teacher_against_itself_is_at_kl_zero(run):
    _, teacher, artifact, _, corpus = run
    config, state = read_checkpoint(teacher)
    assert not config.tie_word_embeddings and not torch.equal(state["lm_head"], state[EMBEDDING])
    itself = kept_token_metrics(teacher, teacher, artifact, causal_data(corpus, "valid", EVAL_SAMPLES), EVAL_SAMPLES)
    # The same fp32 logits on both sides up to the GEMM's blocking (the sliced matrix vs the full one):
    # KL is quadratic in that rounding difference (~1e-7 relative), so far below 1e-9.
    assert itself["kl"] == pytest.approx(0.0, abs=1e-9)
    assert itself["parameters"] == sum(t.numel() for t in state.values())

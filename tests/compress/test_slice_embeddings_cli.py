"""tools/slice_embeddings.py: the artifact from a TP=2, PP=2 teacher checkpoint; bad input gives one line."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from megatron_glmd.compress.artifact import load_artifact
from megatron_glmd.compress.ranking import rank_vocabulary
from megatron_glmd.compress.token_map import map_tokens
from megatron_glmd.config import preset
from megatron_glmd.convert import write_checkpoint
from megatron_glmd.data.vocab_frequency import write_frequency_tsv
from megatron_glmd.model import GLMStage
from tools import slice_embeddings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V = 300
CONFIG = preset("tiny-teacher", vocab_size=V, max_sequence_length=32, num_layers=2)
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[sMASK]", "[gMASK]", "[sop]", "[eop]", "[dBLOCK]"] + [
    f"w{i}" for i in range(10, V)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("slice")
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) for k, v in GLMStage(CONFIG).state_dict().items()}
    state["word_embeddings.weight"] = state["word_embeddings.weight"][:V].clone()
    write_checkpoint(str(root / "teacher"), CONFIG, state, tp=2, pp=2)
    counts = np.random.default_rng(0).zipf(1.4, V) % 500
    for vocab, name in ((V, "freq.tsv"), (V - 20, "other.tsv")):
        order = rank_vocabulary(counts[:vocab], list(range(10)) + [42])
        write_frequency_tsv(str(root / name), TOKENS[:vocab], counts[:vocab], order, special_ids=range(10),
                            protected_ids=[42])
    return root, state["word_embeddings.weight"], counts


def test_cli_writes_the_artifact_and_prints_the_summary(inputs):
    root, embedding, counts = inputs
    out = root / "vc"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "slice_embeddings.py"), "--teacher",
                           str(root / "teacher"), "--frequencies", str(root / "freq.tsv"), "--ratio", "0.5",
                           "--output", str(out), "--student-model", "tiny-student", "--device", "cpu",
                           "--chunk-mib", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: kept K = 256 of 300 ids (r_v = 0.5), mapping inner" in done.stdout
    assert "corpus tokens covered by the kept set" in done.stdout and "map spread" in done.stdout
    assert "token map (inner)" in done.stderr                  # the progress bar
    art = load_artifact(str(out), vocab_size=V, tokens=TOKENS)
    order = rank_vocabulary(counts, list(range(10)) + [42])
    assert art.kept_ids.tolist() == order[:256].tolist()
    expected = map_tokens(embedding, art.kept_ids, special_ids=range(10), device="cpu", progress=False)
    assert torch.equal(art.token_map, expected) and torch.equal(art.teacher_output_weight, embedding[art.kept_ids])
    width = preset("tiny-student").hidden_size
    assert art.summary["student_parameters_saved"] == (384 - 256) * width
    assert art.summary["sources"]["teacher"] == str(root / "teacher")


@pytest.mark.parametrize("args,message", [
    (["--frequencies", "{root}/other.tsv", "--ratio", "0.5"],
     "error: {root}/teacher/config.yaml: vocab_size is 300, but the frequency table has 280 ids"),
    (["--ratio", "1.5"], "error: --ratio: vocabulary ratio r_v must be in (0, 1], got 1.5"),
    (["--ratio", "0"], "error: --ratio: vocabulary ratio r_v must be in (0, 1], got 0.0"),
    (["--kept", "8"], "error: --kept: K = 8 cannot hold the 11 protected tokens; raise r_v or K"),
    (["--kept", "301"], "error: --kept: K = 301 exceeds the 300 ids of the frequency table"),
    (["--ratio", "0.5", "--teacher", "{root}/nowhere"],
     "error: {root}/nowhere/config.yaml: missing: not a megatron-glmd checkpoint directory"),
    (["--ratio", "0.5", "--frequencies", "{root}/none.tsv"], "error: {root}/none.tsv: frequency table does not exist"),
    (["--ratio", "0.5", "--mapping", "unk", "--unk-token", "<unk>"],
     "error: --unk-token: no special token '<unk>' in the frequency table"),
    (["--ratio", "0.5", "--student-model", "glm-huge"], "error: --student-model: unknown preset 'glm-huge'"),
    (["--ratio", "0.5", "--output", "{root}/no/vc"], "error: --output: {root}/no/vc: the parent directory"),
])
def test_bad_input_gives_one_line(inputs, capsys, args, message):
    root = inputs[0]
    argv = ["--teacher", str(root / "teacher"), "--frequencies", str(root / "freq.tsv"), "--output",
            str(root / "bad"), "--quiet"]
    assert slice_embeddings.main(argv + [a.format(root=root) for a in args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message.format(root=root)) and err.count("\n") == 1, err
    assert not os.path.exists(root / "bad")


def test_existing_output_is_refused_unless_overwrite(inputs, capsys):
    root = inputs[0]
    (root / "taken").mkdir()
    (root / "taken" / "x").write_text("mine")
    argv = ["--teacher", str(root / "teacher"), "--frequencies", str(root / "freq.tsv"), "--output",
            str(root / "taken"), "--kept", "128", "--quiet", "--device", "cpu"]
    assert slice_embeddings.main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"error: --output: {root / 'taken'}: already exists (pass overwrite to replace it)\n"
    assert slice_embeddings.main(argv + ["--overwrite"]) == 1
    assert "not a vocabulary-compression artifact" in capsys.readouterr().err
    assert (root / "taken" / "x").read_text() == "mine"


def test_factorised_teacher_is_refused(tmp_path, capsys):
    config = CONFIG.replace(embedding_size=16)
    state = {k: torch.zeros(v.shape) for k, v in GLMStage(config).state_dict().items()}
    state["word_embeddings.weight"] = state["word_embeddings.weight"][:V].clone()
    write_checkpoint(str(tmp_path / "teacher"), config, state)
    counts = np.ones(V, dtype=np.int64)
    write_frequency_tsv(str(tmp_path / "f.tsv"), TOKENS, counts, rank_vocabulary(counts, range(10)),
                        special_ids=range(10))
    argv = ["--teacher", str(tmp_path / "teacher"), "--frequencies", str(tmp_path / "f.tsv"), "--ratio", "0.5",
            "--output", str(tmp_path / "vc"), "--student-model", str(tmp_path / "student.yaml")]
    (tmp_path / "student.yaml").write_text("preset: tiny-student\nembedding_size: 8\n", encoding="utf-8")
    assert slice_embeddings.main(argv) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'teacher' / 'config.yaml'}: embedding_size: a factorised teacher embedding "
                   "is not supported\n")

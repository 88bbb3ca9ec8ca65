"""A tokenizer.json through every tool that takes a tokenizer: preprocessing (ids equal the library's
encoding of each whole document, or of each sentence with --split-sentences on), frequency counting (its special roles protected), vocabulary slicing of
a teacher over that vocabulary; bad tokenizer files stop each tool with one line."""
import csv
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from megatron_glmd.compress.artifact import load_artifact
from megatron_glmd.config import preset
from megatron_glmd.convert import write_checkpoint
from megatron_glmd.data.indexed_dataset import IndexedDataset
from megatron_glmd.data.preprocess import split_sentences
from megatron_glmd.data.tokenizer import load_tokenizer
from megatron_glmd.model import GLMStage
from tests.data.corpus import paragraphs, train_byte_level_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>")


def tool(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_tools")
    (root / "tok").mkdir()
    reference = train_byte_level_bpe(root / "tok", 384, 300, special_tokens=SPECIALS)
    texts = paragraphs()[300:360] + ["A document that spells <|end_of_text|> out."]
    (root / "corpus.txt").write_text("\n\n".join(texts), encoding="utf-8")
    return root, reference, texts


def test_preprocess_count_and_slice(files):
    root, reference, texts = files
    tok_json = root / "tok" / "tokenizer.json"
    done = tool("preprocess_data.py", "--input", root / "corpus.txt", "--output-prefix", root / "ds",
                "--tokenizer-model", tok_json, "--tokenizer-type", "hf", "--quiet")
    assert done.returncode == 0, done.stderr
    ds = IndexedDataset(str(root / "ds"))
    # Type hf keeps each document whole by default (split, a byte-level BPE loses the spaces between sentences).
    expected = [reference.encode(t, add_special_tokens=False).ids for t in texts[:-1]]
    assert ds.vocab_size == 384 and len(ds) == len(texts) == ds.num_sentences
    assert [ds.document(k).tolist() for k in range(len(texts) - 1)] == expected
    assert [reference.decode(ds.document(k).tolist()) for k in range(len(texts) - 1)] == texts[:-1]
    # Raw text never yields a special id: the spelled-out EOD is ordinary pieces that decode to it.
    last = ds.document(len(texts) - 1).tolist()
    assert 1 not in ds.tokens[:] and reference.decode(last) == texts[-1]
    expected.append(last)
    done = tool("preprocess_data.py", "--input", root / "corpus.txt", "--output-prefix", root / "split",
                "--tokenizer-model", tok_json, "--tokenizer-type", "hf", "--split-sentences", "on", "--quiet")
    assert done.returncode == 0, done.stderr
    split = IndexedDataset(str(root / "split"))
    assert [split.document(k).tolist() for k in range(len(texts) - 1)] == [
        [i for s in split_sentences(t, keep_whitespace=True) for i in reference.encode(s, add_special_tokens=False).ids]
        for t in texts[:-1]]

    done = tool("count_vocab_freq.py", "--data-prefix", root / "ds", "--tokenizer-model", tok_json,
                "--tokenizer-type", "hf", "--output", root / "freq.tsv", "--quiet")
    assert done.returncode == 0, done.stderr
    with open(root / "freq.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    tok = load_tokenizer(tok_json, "hf")
    assert [r["token"] for r in rows] == tok.tokens()
    counts = Counter(i for doc in expected for i in doc)
    assert [int(r["count"]) for r in rows] == [counts.get(i, 0) for i in range(384)]
    assert [(i, r["rank"]) for i, r in enumerate(rows) if r["role"] == "special"] == [(0, "0"), (1, "1")]

    config = preset("tiny-teacher", vocab_size=384, max_sequence_length=32, num_layers=2)
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) for k, v in GLMStage(config).state_dict().items()}
    state["word_embeddings.weight"] = state["word_embeddings.weight"][:384].clone()
    write_checkpoint(str(root / "teacher"), config, state, tp=1, pp=1)
    done = tool("slice_embeddings.py", "--teacher", root / "teacher", "--frequencies", root / "freq.tsv",
                "--ratio", "0.5", "--output", root / "vc", "--device", "cpu", "--quiet")
    assert done.returncode == 0, done.stderr
    art = load_artifact(str(root / "vc"), vocab_size=384, tokens=tok.tokens())
    kept = art.kept_ids.tolist()
    assert len(kept) == 256 and kept[:2] == [0, 1]                # BOS and EOD kept first
    ranked = sorted(range(2, 384), key=lambda i: (-counts.get(i, 0), i))
    assert kept[2:] == ranked[:254]
    assert art.token_map[:2].tolist() == [0, 1] and set(art.token_map.tolist()) <= set(kept)


def test_bad_tokenizer_files_give_one_line(files, tmp_path):
    root, _, _ = files
    (tmp_path / "tokenizer.json").write_text('{"vocab": [1, 2]}')
    no_eos = tmp_path / "no_eos"
    no_eos.mkdir()
    train_byte_level_bpe(no_eos, 300, 50, special_tokens=("<|begin_of_text|>",))
    for bad, message in ((tmp_path / "tokenizer.json", "not a Hugging Face tokenizer.json"),
                         (no_eos, "has no end-of-document token")):
        for done in (tool("preprocess_data.py", "--input", root / "corpus.txt", "--output-prefix", tmp_path / "x",
                          "--tokenizer-model", bad, "--tokenizer-type", "hf", "--quiet"),
                     tool("count_vocab_freq.py", "--data-prefix", root / "ds", "--tokenizer-model", bad,
                          "--tokenizer-type", "hf", "--output", tmp_path / "f.tsv", "--quiet")):
            assert done.returncode == 1 and done.stdout == ""
            assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
            assert done.stderr.count("\n") == 1
    assert not (tmp_path / "x.bin").exists() and not (tmp_path / "f.tsv").exists()

"""The tools run as scripts (`python tools/NAME.py ...`): outputs, messages and exit codes."""
import csv
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from megatron_glmd.data.indexed_dataset import IndexedDataset
from megatron_glmd.data.tokenizer import GLMTokenizer
from tests.data.corpus import paragraphs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tool(name, *args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_train_tokenizer_cli(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(paragraphs()[:800]), encoding="utf-8")
    done = tool("train_tokenizer.py", "--input", corpus, "--vocab-size", 500, "--model-prefix", tmp_path / "m",
                "--threads", 1)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "500 ids" in done.stdout
    tok = GLMTokenizer(tmp_path / "m.model")
    assert tok.vocab_size == 500 and tok.id_to_token(6) == "[gMASK]"
    assert sorted(os.listdir(tmp_path)) == ["c.txt", "m.model", "m.vocab"]
    failed = tool("train_tokenizer.py", "--input", tmp_path / "none.txt", "--vocab-size", 500, "--model-prefix",
                  tmp_path / "x")
    assert failed.returncode == 1 and failed.stderr.strip() == f"error: input file '{tmp_path / 'none.txt'}' does not exist"


def test_preprocess_then_count_cli(tmp_path, tokenizer_model):
    texts = paragraphs()[:300]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    done = tool("preprocess_data.py", "--input", src, "--output-prefix", tmp_path / "ds", "--tokenizer-model",
                tokenizer_model, "--workers", 2)
    assert done.returncode == 0, done.stderr
    assert "300 documents" in done.stdout and "MB/s" in done.stdout
    assert "tokenising" in done.stderr  # the progress bar
    ds = IndexedDataset(str(tmp_path / "ds"))
    tok = GLMTokenizer(tokenizer_model)
    (tmp_path / "protected.txt").write_text(tok.id_to_token(700) + "\n", encoding="utf-8")
    done = tool("count_vocab_freq.py", "--data-prefix", tmp_path / "ds", "--tokenizer-model", tokenizer_model,
                "--output", tmp_path / "freq.tsv", "--protected-tokens", tmp_path / "protected.txt", "--workers", 2,
                "--chunk-tokens", 5000)
    assert done.returncode == 0, done.stderr
    assert "M tokens/s" in done.stdout and "counting" in done.stderr
    with open(tmp_path / "freq.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, dialect="excel-tab"))
    assert rows[0] == ["id", "token", "count", "rank", "role"] and len(rows) == tok.vocab_size + 1
    assert [r[4] for r in rows[1:12]] == ["special"] * 10 + ["ordinary"] and rows[701][4] == "protected"
    expected = Counter(t for text in texts for t in tok.encode(text))
    assert [int(r[2]) for r in rows[1:]] == [expected.get(i, 0) for i in range(tok.vocab_size)]
    assert [r[1] for r in rows[1:]] == tok.tokens()
    assert expected == Counter(ds.tokens.tolist())
    by_rank = sorted(rows[1:], key=lambda r: int(r[3]))
    assert [int(r[0]) for r in by_rank[:11]] == list(range(10)) + [700]
    rest = [(-int(r[2]), int(r[0])) for r in by_rank[11:]]
    assert rest == sorted(rest)


def test_preprocess_split_sentences_flags():
    from tools.preprocess_data import SPLIT, parse_args
    required = ["--input", "a.txt", "--output-prefix", "o", "--tokenizer-model", "m.model"]
    flags = ([], ["--split-sentences", "on"], ["--split-sentences", "off"], ["--no-split-sentences"])
    assert [SPLIT[parse_args(required + f).split_sentences] for f in flags] == [None, True, False, False]


@pytest.mark.parametrize("lines,message", [
    (['{"text": "a"}', '{"text": "b"'], r"c.jsonl:2: invalid JSON"),
    (['{"text": "a"}', '{"body": "b"}'], r"c.jsonl:2: key 'text' missing"),
])
def test_preprocess_cli_errors(tmp_path, tokenizer_model, lines, message):
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = tool("preprocess_data.py", "--input", tmp_path / "c.jsonl", "--output-prefix", tmp_path / "ds",
                "--tokenizer-model", tokenizer_model, "--quiet")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and message in done.stderr and "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["c.jsonl"]


def test_count_cli_errors(tmp_path, tokenizer_model):
    done = tool("count_vocab_freq.py", "--data-prefix", tmp_path / "missing", "--tokenizer-model", tokenizer_model,
                "--output", tmp_path / "f.tsv", "--quiet")
    assert done.returncode == 1 and done.stderr.startswith("error: dataset file") and "missing.idx" in done.stderr
    (tmp_path / "p.txt").write_text("▁nonexistentpiece\n", encoding="utf-8")
    done = tool("count_vocab_freq.py", "--data-prefix", tmp_path / "missing", "--tokenizer-model", tokenizer_model,
                "--output", tmp_path / "f.tsv", "--protected-tokens", tmp_path / "p.txt")
    assert done.returncode == 1 and "p.txt:1: token '▁nonexistentpiece'" in done.stderr
    assert not (tmp_path / "f.tsv").exists()

"""count_vocab_freq over a corpus tokenised with GLM's BPE (a tiny byte-level BPE trained here):
command tokens and <|endoftext|> are `special`, and the TSV, whose pieces include `"`, is read
row for row by the csv module and by pandas with their defaults."""
import csv
import os
import subprocess
import sys
from collections import Counter

import pytest

from megatron_glmd.data.indexed_dataset import write_documents
from megatron_glmd.data.tokenizer import load_tokenizer
from megatron_glmd.data.vocab_frequency import read_frequency_tsv
from tests.data.corpus import paragraphs, train_byte_level_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUOTED = ['He said "no" and left.', 'A "quoted" word, then another "one".', "tabs\tand 'single' quotes"]


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    train_byte_level_bpe(folder, 500, 300, extra_texts=QUOTED * 20)
    return folder


def test_count_with_glm_bpe_is_read_by_csv_and_pandas(tmp_path, bpe_folder):
    tok = load_tokenizer(bpe_folder)
    texts = paragraphs()[300:400] + QUOTED * 5
    docs = [[tok.encode(t)] for t in texts]
    write_documents(str(tmp_path / "ds"), tok.vocab_size, docs)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "count_vocab_freq.py"), "--data-prefix",
                           str(tmp_path / "ds"), "--tokenizer-model", str(bpe_folder), "--output",
                           str(tmp_path / "f.tsv"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tokens = tok.tokens()
    assert '"' in tokens                                    # the piece that merged rows before
    with open(tmp_path / "f.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["token"] for r in rows] == tokens
    expected = Counter(i for doc in docs for i in doc[0])
    assert [int(r["count"]) for r in rows] == [expected.get(i, 0) for i in range(tok.vocab_size)]
    specials = sorted({tok.pad_id, tok.eod_id, tok.sop_id, tok.eop_id, tok.cls_id, tok.mask_id, tok.sep_id,
                       tok.unk_id, tok.gmask_id, tok.smask_id})
    assert [i for i, r in enumerate(rows) if r["role"] == "special"] == specials
    assert sorted(int(rows[i]["rank"]) for i in specials) == list(range(len(specials)))
    table = read_frequency_tsv(str(tmp_path / "f.tsv"))
    assert table.tokens == tokens and table.special_ids == specials
    import pandas as pd   # a dev dependency: the interoperability the table promises

    df = pd.read_csv(tmp_path / "f.tsv", sep="\t", keep_default_na=False)
    assert len(df) == len(tokens) and df["token"].tolist() == tokens

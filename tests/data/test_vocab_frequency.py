import csv
from collections import Counter

import numpy as np
import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data.indexed_dataset import write_documents
from megatron_glmd.compress.ranking import rank_vocabulary
from megatron_glmd.data.vocab_frequency import (TSV_HEADER, count_token_ids, read_frequency_tsv, read_protected_tokens,
                                                write_frequency_tsv)


def zipf_documents(rng, vocab_size, num_docs):
    return [[(np.minimum(rng.zipf(1.3, rng.integers(1, 200)), vocab_size) - 1).tolist()] for _ in range(num_docs)]


@pytest.mark.parametrize("workers,chunk", [(1, 1000), (1, 1 << 24), (2, 777)])
def test_counts_equal_counter(tmp_path, workers, chunk):
    rng = np.random.default_rng(workers * chunk)
    docs_a, docs_b = zipf_documents(rng, 500, 300), zipf_documents(rng, 500, 100)
    write_documents(str(tmp_path / "a"), 500, docs_a)
    write_documents(str(tmp_path / "b"), 500, docs_b)
    result = count_token_ids([str(tmp_path / "a"), str(tmp_path / "b")], 500, workers=workers, chunk_tokens=chunk,
                             progress=False)
    expected = Counter(t for doc in docs_a + docs_b for s in doc for t in s)
    assert result.counts.tolist() == [expected.get(i, 0) for i in range(500)]
    assert result.tokens == sum(expected.values())


# Tokens that broke the old hand-written TSV for csv/pandas readers, and ones pandas treats specially.
AWKWARD = ['"', '""', 'say "hi"', "tab\there", "new\nline", "carriage\rreturn", "crlf\r\n", "'", " lead", "trail ",
           "007", "1e5", "#", ",", ";", "\\", "[UNK]x"]
PANDAS_NA = ["null", "NaN"]   # pandas reads these as missing unless keep_default_na=False


def awkward_table(tmp_path):
    tokens = [f"[S{i}]" for i in range(10)] + AWKWARD + PANDAS_NA + [f"t{i}" for i in range(20)]
    counts = np.arange(len(tokens)) % 7
    specials, protected = list(range(10)), [12, 30]
    order = rank_vocabulary(counts, specials + protected)
    path = str(tmp_path / "f.tsv")
    write_frequency_tsv(path, tokens, counts, order, special_ids=specials, protected_ids=protected)
    return path, tokens, counts, order


def test_tsv_round_trip_roles_and_ranks(tmp_path):
    path, tokens, counts, order = awkward_table(tmp_path)
    table = read_frequency_tsv(path)
    assert table.tokens == tokens and table.counts.tolist() == counts.tolist() and table.order.tolist() == order.tolist()
    assert table.special_ids == list(range(10)) and table.protected_ids == list(range(10)) + [12, 30]
    assert table.roles[12] == "protected" and table.roles[11] == "ordinary"


def test_tsv_is_read_by_csv_with_defaults(tmp_path):
    path, tokens, counts, order = awkward_table(tmp_path)
    rank = np.argsort(order)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, dialect="excel-tab"))
    with open(path, encoding="utf-8", newline="") as f:
        dict_rows = list(csv.DictReader(f, delimiter="\t"))
    assert tuple(rows[0]) == TSV_HEADER and len(rows) == len(tokens) + 1 == len(dict_rows) + 1
    assert [r[1] for r in rows[1:]] == tokens == [r["token"] for r in dict_rows]
    assert [int(r["count"]) for r in dict_rows] == counts.tolist()
    assert [int(r["rank"]) for r in dict_rows] == rank.tolist()


def test_tsv_is_read_by_pandas_with_defaults(tmp_path):
    import pandas as pd   # a dev dependency: the interoperability the table promises

    path, tokens, counts, order = awkward_table(tmp_path)
    df = pd.read_csv(path, sep="\t")
    assert list(df.columns) == list(TSV_HEADER) and len(df) == len(tokens)
    assert df["id"].tolist() == list(range(len(tokens))) and df["count"].tolist() == counts.tolist()
    assert df["rank"].tolist() == np.argsort(order).tolist()
    na = [t in PANDAS_NA for t in tokens]
    assert df["token"].isna().tolist() == na
    assert [t for t, missing in zip(df["token"].tolist(), na) if not missing] == [t for t in tokens if t not in PANDAS_NA]
    assert pd.read_csv(path, sep="\t", keep_default_na=False)["token"].tolist() == tokens


@pytest.mark.parametrize("body,message", [
    ("id\ttoken\tcount\trank\n0\t[PAD]\t0\t0\n", r"bad\.tsv:1: header is .* \(rerun tools/count_vocab_freq\.py\)"),
    ("id\ttoken\tcount\trank\trole\n0\t[PAD]\tx\t0\tspecial\n", r"bad\.tsv:2: id, count and rank must be integers"),
    ("id\ttoken\tcount\trank\trole\n0\ta\t1\t0\tordinary\n2\tb\t1\t1\tordinary\n", r"bad\.tsv:3: id 2 out of order"),
    ("id\ttoken\tcount\trank\trole\n0\ta\t1\t0\tvip\n", r"bad\.tsv:2: role must be one of"),
    ("id\ttoken\tcount\trank\trole\n0\ta\t1\t0\tordinary\n1\tb\t1\t0\tordinary\n", r"bad\.tsv: the rank column"),
    ("id\ttoken\tcount\trank\trole\n0\ta\t1\t0\tordinary\n1\tb\t1\t1\tspecial\n",
     r"bad\.tsv: the special and protected tokens must take the first 1 ranks"),
    ("id\ttoken\tcount\trank\trole\n", r"bad\.tsv: the table has no rows"),
])
def test_tsv_errors_name_file_and_line(tmp_path, body, message):
    (tmp_path / "bad.tsv").write_text(body, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_frequency_tsv(str(tmp_path / "bad.tsv"))


def test_tsv_writer_refuses_protected_tokens_ranked_late(tmp_path):
    counts = np.array([5, 1, 9])
    with pytest.raises(DataError, match="must take the first 1 ranks"):
        write_frequency_tsv(str(tmp_path / "f.tsv"), ["a", "b", "c"], counts, rank_vocabulary(counts), special_ids=[1])
    assert not (tmp_path / "f.tsv").exists()


def test_ids_outside_the_vocabulary_and_mismatched_datasets(tmp_path):
    write_documents(str(tmp_path / "a"), 1000, [[[1, 2, 999]]])
    with pytest.raises(DataError, match="written for a vocabulary of 1000 ids, the tokenizer has 500"):
        count_token_ids([str(tmp_path / "a")], 500, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        count_token_ids([str(tmp_path / "zzz")], 500, progress=False)


def test_protected_tokens_file(tmp_path, tokenizer):
    piece = tokenizer.id_to_token(321)
    (tmp_path / "p.txt").write_text(f"{piece}\n\n[MASK]\n", encoding="utf-8")
    assert read_protected_tokens(str(tmp_path / "p.txt"), tokenizer.token_to_id) == [321, 4]
    (tmp_path / "q.txt").write_text(f"{piece}\nnot-a-piece\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"q\.txt:2: token 'not-a-piece' is not in the tokenizer's vocabulary"):
        read_protected_tokens(str(tmp_path / "q.txt"), tokenizer.token_to_id)

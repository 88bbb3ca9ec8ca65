import math
from collections import Counter

import numpy as np
import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data.indexed_dataset import write_documents
from megatron_glmd.data.vocab_frequency import (count_token_ids, kept_token_ids, kept_vocab_size, rank_vocabulary,
                                                read_frequency_tsv, read_protected_tokens, write_frequency_tsv)


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


def reference_order(counts, protected):
    protected = set(protected) | set(range(10))
    return sorted(range(len(counts)), key=lambda i: (0, i) if i in protected else (1, -counts[i], i))


def test_ranking_matches_hand_written_sort():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, 3000)  # many ties
    protected = [2999, 500, 11, 500]
    order = rank_vocabulary(counts, protected)
    assert order.tolist() == reference_order(counts.tolist(), protected)
    assert order[:13].tolist() == list(range(10)) + [11, 500, 2999]


def test_ranking_hand_case():
    counts = np.array([0] * 10 + [5, 9, 5, 0, 9])
    assert rank_vocabulary(counts, [13]).tolist() == list(range(10)) + [13, 11, 14, 10, 12]
    with pytest.raises(DataError, match="protected token id 15 is outside"):
        rank_vocabulary(counts, [15])


@pytest.mark.parametrize("v,r,k", [(30592, 0.5, 15360), (1000, 0.1, 128), (1536, 1.0, 1536), (50304, 0.25, 12672),
                                   (1280, 0.1, 128), (12800, 0.01, 128), (1000, 1.0, 1024)])
def test_kept_vocab_size(v, r, k):
    assert kept_vocab_size(v, r) == k == math.ceil(round(v * r, 6) / 128) * 128


def test_kept_vocab_size_errors_and_kept_ids():
    for r in (0, -0.1, 1.5):
        with pytest.raises(DataError, match="r_v"):
            kept_vocab_size(100, r)
    order = np.arange(1000)[::-1]
    assert kept_token_ids(order, 1000, 0.1).tolist() == order[:128].tolist()
    assert kept_token_ids(order, 1000, 1.0).size == 1000
    with pytest.raises(DataError, match="cannot hold the 200 protected"):
        kept_token_ids(order, 1000, 0.1, num_protected=200)


def test_tsv_round_trip_and_errors(tmp_path):
    counts = np.array([0] * 10 + [3, 7, 7])
    tokens = [f"t{i}" for i in range(13)]
    order = rank_vocabulary(counts)
    write_frequency_tsv(str(tmp_path / "f.tsv"), tokens, counts, order)
    lines = (tmp_path / "f.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id\ttoken\tcount\trank" and lines[11] == "10\tt10\t3\t12" and lines[12] == "11\tt11\t7\t10"
    got_tokens, got_counts, got_order = read_frequency_tsv(str(tmp_path / "f.tsv"))
    assert got_tokens == tokens and got_counts.tolist() == counts.tolist() and got_order.tolist() == order.tolist()
    (tmp_path / "bad.tsv").write_text("id\ttoken\tcount\trank\n0\t[PAD]\tx\t0\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:2: id, count and rank must be integers"):
        read_frequency_tsv(str(tmp_path / "bad.tsv"))


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

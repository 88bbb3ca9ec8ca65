import math

import numpy as np
import pytest

from megatron_glmd.compress.ranking import (kept_token_ids, kept_vocab_size, rank_vocabulary, special_token_ids)
from megatron_glmd.data import DataError


def reference_order(counts, protected):
    protected = set(protected)
    return sorted(range(len(counts)), key=lambda i: (0, i) if i in protected else (1, -counts[i], i))


def test_ranking_matches_hand_written_sort():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, 3000)  # many ties
    protected = list(range(10)) + [2999, 500, 11, 500]
    order = rank_vocabulary(counts, protected)
    assert order.tolist() == reference_order(counts.tolist(), protected)
    assert order[:13].tolist() == list(range(10)) + [11, 500, 2999]


def test_ranking_hand_case():
    counts = np.array([0] * 10 + [5, 9, 5, 0, 9])
    assert rank_vocabulary(counts, [13]).tolist() == [13, 11, 14, 10, 12] + list(range(10))
    assert rank_vocabulary(counts, list(range(10)) + [13]).tolist() == list(range(10)) + [13, 11, 14, 10, 12]
    with pytest.raises(DataError, match="protected token id 15 is outside"):
        rank_vocabulary(counts, [15])


def test_special_ids_come_from_the_tokenizer(tokenizer):
    assert special_token_ids(tokenizer) == list(range(10))

    class Bpe:  # GLM's BPE tokenizer puts its command tokens after the GPT-2 pieces; pad == eod
        pad_id = eod_id = 50256
        sop_id, eop_id, cls_id, mask_id, sep_id, unk_id, gmask_id, smask_id = range(50257, 50265)
        dblock_id = None
    assert special_token_ids(Bpe()) == list(range(50256, 50265))


@pytest.mark.parametrize("v,r,k", [(30592, 0.5, 15360), (1000, 0.1, 128), (1536, 1.0, 1536), (50304, 0.25, 12672),
                                   (1280, 0.1, 128), (12800, 0.01, 128), (1000, 1.0, 1024), (50304, 0.5, 25216)])
def test_kept_vocab_size(v, r, k):
    assert kept_vocab_size(v, r) == k == math.ceil(round(v * r, 6) / 128) * 128


def test_kept_vocab_size_errors_and_kept_ids():
    for r in (0, -0.1, 1.5, float("nan"), True):
        with pytest.raises(DataError, match="r_v"):
            kept_vocab_size(100, r)
    order = np.arange(1000)[::-1]
    assert kept_token_ids(order, 128).tolist() == order[:128].tolist()
    assert kept_token_ids(order, kept_vocab_size(1000, 1.0)).size == 1000
    with pytest.raises(DataError, match="K = 128 cannot hold the 200 protected"):
        kept_token_ids(order, 128, num_protected=200)
    with pytest.raises(DataError, match="K must be positive"):
        kept_token_ids(order, 0)

import numpy as np
import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data import _helpers
from megatron_glmd.data.sample_index import (build_sample_index, build_sample_index_reference, derive_key,
                                             epochs_for_samples, permutation_reference, window_pieces)

CASES = [  # (num_docs, max_len, seq_length, epochs, seed)
    (1, 10, 3, 1, 0), (1, 5, 50, 3, 1), (7, 4, 3, 2, 2), (100, 60, 64, 3, 5),
    (2000, 300, 17, 2, 2**64 - 1), (5000, 40, 512, 4, 12345),
]


@pytest.mark.parametrize("num_docs,max_len,seq_length,epochs,seed", CASES)
def test_cpp_equals_numpy_reference(num_docs, max_len, seq_length, epochs, seed):
    lengths = np.random.default_rng(seed % 1000).integers(1, max_len + 1, num_docs)
    cpp = build_sample_index(lengths, seq_length, epochs, seed)
    ref = build_sample_index_reference(lengths, seq_length, epochs, seed)
    assert cpp.doc_idx.dtype == ref.doc_idx.dtype == np.int32
    np.testing.assert_array_equal(cpp.doc_idx, ref.doc_idx)
    np.testing.assert_array_equal(cpp.sample_idx, ref.sample_idx)
    np.testing.assert_array_equal(cpp.shuffle_idx, ref.shuffle_idx)
    assert cpp.num_samples == lengths.sum() * epochs // seq_length


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000])
def test_permutations_agree_and_are_permutations(n):
    key = derive_key(7, 3, 1)
    assert _helpers.derive_key(7, 3, 1) == key
    ref = permutation_reference(n, key)
    np.testing.assert_array_equal(_helpers.permutation(n, key), ref)
    assert sorted(ref.tolist()) == list(range(n))


def test_windows_tile_the_epoch_shuffled_stream():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, 300)
    docs = [rng.integers(0, 1000, n) for n in lengths]
    index = build_sample_index(lengths, 37, 3, seed=9)
    for e in range(3):  # every epoch is one permutation of all documents
        assert sorted(index.doc_idx[e * 300:(e + 1) * 300].tolist()) == list(range(300))
    stream = np.concatenate([docs[d] for d in index.doc_idx])
    for w in range(index.num_samples):
        window = np.concatenate([docs[d][a:b] for d, a, b in window_pieces(index, lengths, w)])
        np.testing.assert_array_equal(window, stream[w * 37:(w + 1) * 37])
    assert sorted(index.shuffle_idx.tolist()) == list(range(index.num_samples))


def test_determinism_and_seed_dependence():
    lengths = np.arange(1, 500)
    a, b, c = (build_sample_index(lengths, 50, 2, s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.shuffle_idx, b.shuffle_idx)
    np.testing.assert_array_equal(a.doc_idx, b.doc_idx)
    assert not np.array_equal(a.shuffle_idx, c.shuffle_idx)
    assert not np.array_equal(a.doc_idx[:499], a.doc_idx[499:])  # epochs are shuffled differently


def test_bad_arguments():
    with pytest.raises(DataError, match="document 2 has length 0"):
        build_sample_index([3, 4, 0, 5], 2, 1, 0)
    with pytest.raises(DataError, match="seq_length"):
        build_sample_index([3], 0, 1, 0)
    with pytest.raises(DataError, match="num_epochs"):
        build_sample_index_reference([3], 2, 0, 0)
    with pytest.raises(DataError, match="non-empty"):
        build_sample_index([], 2, 1, 0)


def test_epochs_for_samples():
    assert epochs_for_samples([10, 20], 5, 6) == 1   # 30 tokens: 6 windows of 5
    assert epochs_for_samples([10, 20], 5, 7) == 2
    index = build_sample_index([10, 20], 5, epochs_for_samples([10, 20], 5, 13), 0)
    assert index.num_samples >= 13

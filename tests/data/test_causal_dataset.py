"""Causal samples (data/causal_dataset.py): a hand-checked corpus, a naive packer as the reference
(one token stream with an EOD after every document, cut into windows, positions restarting after
every EOD by scanning the stream), padding, the loader's DP sharding and exact resume."""
import numpy as np
import pytest
import torch

from megatron_glmd.data import DataError
from megatron_glmd.data.causal_dataset import CausalDataset, causal_sample
from megatron_glmd.data.indexed_dataset import IndexedDataset, write_documents
from megatron_glmd.data.loader import DataParallelLoader, collate
from megatron_glmd.data.sample_index import derive_key, permutation_reference

EOD, PAD = 2, 0
A, B, C, D = [10, 11, 12], [20, 21], [30, 31, 32, 33], [40]


def _dataset(tmp_path, docs, vocab=50, name="ds"):
    write_documents(str(tmp_path / name), vocab, [[d] for d in docs])
    return IndexedDataset(str(tmp_path / name))


def test_hand_checked_corpus(tmp_path):
    write_documents(str(tmp_path / "hand"), 50, [[A], [B], [C[:2], C[2:]], [D]])   # C as two sentences
    ds = CausalDataset(IndexedDataset(str(tmp_path / "hand")), 3, EOD, PAD, seed=7, num_epochs=2)
    # Document order C D B A | B A C D (ds.index.doc_idx); EOD = 2. The stream of 28 tokens:
    #   30 31 32 33 | 2 40 2 20 | 21 2 10 11 | 12 2 20 21 | 2 10 11 12 | 2 30 31 32 | 33 2 40 2
    assert ds.index.doc_idx.tolist() == [2, 3, 1, 0, 1, 0, 2, 3] and len(ds) == 7
    windows = [([30, 31, 32, 33], [0, 1, 2]), ([2, 40, 2, 20], [0, 0, 1]), ([21, 2, 10, 11], [0, 1, 0]),
               ([12, 2, 20, 21], [0, 1, 0]), ([2, 10, 11, 12], [0, 0, 1]), ([2, 30, 31, 32], [0, 0, 1]),
               ([33, 2, 40, 2], [0, 1, 0])]
    assert ds.index.shuffle_idx.tolist() == [2, 6, 0, 5, 1, 4, 3]
    for n, w in enumerate(ds.index.shuffle_idx.tolist()):
        tokens, positions = windows[w]
        s = ds[n]
        assert s["input_ids"].tolist() == tokens[:3] and s["target_ids"].tolist() == tokens[1:]
        assert s["position_ids"].tolist() == positions, n
        assert s["loss_mask"].tolist() == [1.0] * 3 and s["length"] == 3


def test_a_short_window_is_padded():
    s = causal_sample(np.array([7, 8, EOD, 9]), [0, 3], seq_length=6, pad_id=PAD)
    assert s["input_ids"].tolist() == [7, 8, EOD, PAD, PAD, PAD]
    assert s["target_ids"].tolist() == [8, EOD, 9, PAD, PAD, PAD]
    assert s["position_ids"].tolist() == [0, 1, 2, 0, 0, 0]
    assert s["loss_mask"].tolist() == [1, 1, 1, 0, 0, 0] and s["length"] == 3
    with pytest.raises(DataError, match="a causal window needs 2..7 tokens, got 8"):
        causal_sample(np.arange(8), [0], seq_length=6, pad_id=PAD)


def naive_packer(docs, seq_length, epochs, seed, eod):
    """The reference: the epochs' shuffled documents, each + EOD, as one stream; windows of s + 1 in
    shuffled order; a position restarts at the window start and after every EOD."""
    stream = []
    for e in range(epochs):
        for d in permutation_reference(len(docs), derive_key(seed, 1, e)):
            stream.extend(list(docs[d]) + [eod])
    w = seq_length + 1
    windows = [stream[k * w:(k + 1) * w] for k in range(len(stream) // w)]
    samples = []
    for k in permutation_reference(len(windows), derive_key(seed, 2, 0)):
        tokens = windows[k]
        positions = [0]
        for i in range(1, seq_length):
            positions.append(0 if tokens[i - 1] == eod else positions[-1] + 1)
        samples.append((tokens[:-1], tokens[1:], positions))
    return samples


@pytest.mark.parametrize("num_docs,max_len,seq_length,epochs,seed,use_cpp", [
    (1, 10, 3, 2, 0, True), (7, 4, 9, 3, 2, True), (120, 60, 37, 3, 5, True), (40, 200, 16, 2, 2**63, False)])
def test_equals_the_naive_packer(tmp_path, num_docs, max_len, seq_length, epochs, seed, use_cpp):
    rng = np.random.default_rng(seed % 1000)
    docs = [rng.integers(3, 1000, n).tolist() for n in rng.integers(1, max_len + 1, num_docs)]
    ds = CausalDataset(_dataset(tmp_path, docs, vocab=1000), seq_length, EOD, PAD, seed=seed, num_epochs=epochs,
                       use_cpp=use_cpp)
    reference = naive_packer(docs, seq_length, epochs, seed, EOD)
    assert len(ds) == len(reference) > 0
    for n, (inputs, targets, positions) in enumerate(reference):
        s = ds[n]
        assert s["input_ids"].tolist() == inputs and s["target_ids"].tolist() == targets
        assert s["position_ids"].tolist() == positions, n
        assert s["length"] == seq_length and s["loss_mask"].sum() == seq_length


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    rng = np.random.default_rng(3)
    docs = [rng.integers(3, 300, n).tolist() for n in rng.integers(1, 50, 80)]
    return CausalDataset(_dataset(tmp_path_factory.mktemp("packed"), docs, vocab=300), 16, EOD, PAD, seed=4,
                         num_samples=96)


def test_collate_and_dp_sharding(packed):
    batch = collate([packed[i] for i in range(3)])
    assert "sep" not in batch and batch["position_ids"].shape == (3, 16)
    assert batch["position_ids"].dtype == batch["input_ids"].dtype == torch.long
    assert batch["length"].tolist() == [16] * 3 and batch["loss_mask"].dtype == torch.float32
    for dp_size, micro in ((1, 8), (2, 2), (4, 1)):
        loaders = [DataParallelLoader(packed, 8, micro, r, dp_size) for r in range(dp_size)]
        for g in range(3):
            pieces = [next(loader)["input_ids"] for loader in loaders for _ in range(8 // (dp_size * micro))]
            expected = np.stack([packed[i]["input_ids"] for i in range(g * 8, g * 8 + 8)])
            assert torch.equal(torch.cat(pieces), torch.from_numpy(expected))


def test_resume_is_exact_and_checks_the_dataset(packed, tmp_path):
    straight = DataParallelLoader(packed, 8, 2, 1, 2)
    batches = [next(straight) for _ in range(7)]
    first = DataParallelLoader(packed, 8, 2, 1, 2)
    for _ in range(3):
        next(first)
    state = first.state_dict()
    resumed = DataParallelLoader(packed, 8, 2, 1, 2)
    resumed.load_state_dict(state)
    for expected in batches[3:]:
        got = next(resumed)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    other = CausalDataset(packed.indexed, 15, EOD, PAD, seed=4, num_samples=96)
    with pytest.raises(DataError, match="loader state belongs to dataset"):
        DataParallelLoader(other, 8, 2, 1, 2).load_state_dict(state)


def test_bad_arguments(tmp_path):
    indexed = _dataset(tmp_path, [A, B])
    with pytest.raises(DataError, match="no end-of-document token"):
        CausalDataset(indexed, 4, None, PAD, num_epochs=1)
    with pytest.raises(DataError, match="eod_id 50 is outside the dataset's vocabulary"):
        CausalDataset(indexed, 4, 50, PAD, num_epochs=1)
    with pytest.raises(DataError, match="give exactly one of num_samples and num_epochs"):
        CausalDataset(indexed, 4, EOD, PAD, num_samples=9, num_epochs=1)
    assert len(CausalDataset(indexed, 4, EOD, PAD, num_epochs=1)) == 1        # (3 + 1 + 2 + 1) // 5
    with pytest.raises(IndexError):
        CausalDataset(indexed, 4, EOD, PAD, num_epochs=1)[1]

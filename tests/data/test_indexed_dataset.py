import os

import numpy as np
import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data.indexed_dataset import IndexedDataset, IndexedDatasetWriter, write_documents


def random_documents(rng, vocab_size, num_docs):
    return [[rng.integers(0, vocab_size, rng.integers(1, 30)).tolist() for _ in range(rng.integers(1, 5))]
            for _ in range(num_docs)]


@pytest.mark.parametrize("vocab_size,dtype", [(1000, np.uint16), (65536, np.uint16), (70000, np.uint32)])
def test_write_read_round_trip(tmp_path, vocab_size, dtype):
    rng = np.random.default_rng(vocab_size)
    docs = random_documents(rng, vocab_size, 50)
    docs[3][0][0] = vocab_size - 1
    prefix = str(tmp_path / "ds")
    write_documents(prefix, vocab_size, docs)
    ds = IndexedDataset(prefix)
    assert ds.dtype == dtype and ds.vocab_size == vocab_size
    assert os.path.getsize(prefix + ".bin") == sum(len(s) for d in docs for s in d) * np.dtype(dtype).itemsize
    assert ds.num_documents == 50 and ds.num_sentences == sum(len(d) for d in docs)
    for d, doc in enumerate(docs):
        assert ds.document(d).tolist() == [t for s in doc for t in s]
        assert [s.tolist() for s in ds.sentences(d)] == doc
    assert ds.doc_lengths().tolist() == [sum(len(s) for s in doc) for doc in docs]


def test_empty_sentences_and_documents_are_dropped(tmp_path):
    prefix = str(tmp_path / "ds")
    write_documents(prefix, 100, [[[1, 2], [], [3]], [[]], [], [[4]]])
    ds = IndexedDataset(prefix)
    assert [ds.document(d).tolist() for d in range(ds.num_documents)] == [[1, 2, 3], [4]]


def test_out_of_vocabulary_id_is_rejected_and_nothing_written(tmp_path):
    prefix = str(tmp_path / "ds")
    with pytest.raises(DataError, match=r"token id 100 is outside the vocabulary \[0, 100\)"):
        write_documents(prefix, 100, [[[1, 2]], [[100]]])
    assert os.listdir(tmp_path) == []


def test_failed_rewrite_keeps_previous_files(tmp_path):
    prefix = str(tmp_path / "ds")
    write_documents(prefix, 100, [[[1, 2, 3]]])
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    with pytest.raises(RuntimeError):
        with IndexedDatasetWriter(prefix, 100) as writer:
            writer.add_document([[5, 6]])
            raise RuntimeError("boom")
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before


def test_corrupt_files_give_clear_errors(tmp_path):
    prefix = str(tmp_path / "ds")
    with pytest.raises(DataError, match=r"ds\.idx' does not exist"):
        IndexedDataset(prefix)
    write_documents(prefix, 100, [[[1, 2, 3]], [[4]]])
    idx = (tmp_path / "ds.idx").read_bytes()
    (tmp_path / "ds.idx").write_bytes(idx[:-8])
    with pytest.raises(DataError, match="truncated or corrupt"):
        IndexedDataset(prefix)
    (tmp_path / "ds.idx").write_bytes(b"XXXXXXXX" + idx[8:])
    with pytest.raises(DataError, match="bad magic"):
        IndexedDataset(prefix)
    (tmp_path / "ds.idx").write_bytes(idx)
    (tmp_path / "ds.bin").write_bytes(b"\0" * 4)
    with pytest.raises(DataError, match="do not belong together"):
        IndexedDataset(prefix)

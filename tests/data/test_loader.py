import io

import numpy as np
import pytest
import torch

from megatron_glmd.data import DataError
from megatron_glmd.data.blank_infilling import BlankInfillingConfig
from megatron_glmd.data.glm_dataset import BlankInfillingDataset
from megatron_glmd.data.loader import DataParallelLoader, collate
from megatron_glmd.data.tokenizer import special_ids


@pytest.fixture(scope="module")
def dataset(real_dataset, tokenizer):
    return BlankInfillingDataset(real_dataset, BlankInfillingConfig(seq_length=64, task_mask=True),
                                 special_ids(tokenizer), seed=11,
                                 num_samples=96, mode_group_size=8)


def test_collate_shapes_and_dtypes(dataset):
    samples = [dataset[i] for i in range(3)]
    batch = collate(samples)
    assert batch["input_ids"].shape == (3, 64) and batch["input_ids"].dtype == torch.long
    assert batch["target_ids"].dtype == torch.long and batch["position_ids"].shape == (3, 2, 64)
    assert batch["loss_mask"].dtype == torch.float32 and batch["loss_mask"].shape == (3, 64)
    assert batch["sep"].tolist() == [s["sep"] for s in samples]
    assert batch["length"].tolist() == [s["length"] for s in samples]
    for i, s in enumerate(samples):
        assert batch["position_ids"][i].tolist() == s["position_ids"].tolist()
        assert batch["input_ids"][i].tolist() == s["input_ids"].tolist()


def same_batches(a, b):
    return len(a) == len(b) and all(all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


@pytest.mark.parametrize("dp_size,micro", [(1, 8), (2, 2), (4, 1)])
def test_ranks_split_each_global_batch_in_order(dataset, dp_size, micro):
    loaders = [DataParallelLoader(dataset, 8, micro, r, dp_size) for r in range(dp_size)]
    for g in range(3):
        pieces = []
        for loader in loaders:
            for _ in range(8 // (dp_size * micro)):
                pieces.append(next(loader)["input_ids"])
        expected = np.stack([dataset[i]["input_ids"] for i in range(g * 8, g * 8 + 8)])
        assert torch.equal(torch.cat(pieces), torch.from_numpy(expected))


def test_resume_yields_the_same_following_batches(dataset):
    loader = DataParallelLoader(dataset, 8, 2, dp_rank=1, dp_size=2)
    for _ in range(5):  # stops inside a global batch (2 micro-batches per global batch per rank)
        next(loader)
    buffer = io.BytesIO()
    torch.save(loader.state_dict(), buffer)
    expected = [next(loader) for _ in range(6)]
    resumed = DataParallelLoader(dataset, 8, 2, dp_rank=1, dp_size=2)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer))
    assert same_batches([next(resumed) for _ in range(6)], expected)


def test_resume_at_global_batch_boundary_with_other_dp_layout(dataset):
    loader = DataParallelLoader(dataset, 8, 4, 0, 1)
    for _ in range(2 * 2):
        next(loader)
    state = loader.state_dict()
    assert state["consumed_samples"] == 16 and state["micro_batch"] == 0
    ranks = [DataParallelLoader(dataset, 8, 1, r, 4) for r in range(4)]
    for r in ranks:
        r.load_state_dict(state)
    per_rank = [torch.cat([next(r)["input_ids"], next(r)["input_ids"]]) for r in ranks]
    original = torch.cat([next(loader)["input_ids"], next(loader)["input_ids"]])  # samples 16..23
    assert torch.equal(torch.cat(per_rank), original)
    assert torch.equal(original, torch.from_numpy(np.stack([dataset[i]["input_ids"] for i in range(16, 24)])))


def test_loader_stops_after_last_full_global_batch(dataset):
    loader = DataParallelLoader(dataset, 40, 20, 0, 2)
    assert loader.num_global_batches == 2
    assert len(list(loader)) == 2


def test_bad_states_and_layouts(dataset, real_dataset):
    with pytest.raises(DataError, match="not a multiple"):
        DataParallelLoader(dataset, 10, 4, 0, 2)
    with pytest.raises(DataError, match="dp_rank 2"):
        DataParallelLoader(dataset, 8, 1, 2, 2)
    loader = DataParallelLoader(dataset, 8, 2, 0, 2)
    next(loader)
    state = loader.state_dict()
    with pytest.raises(DataError, match="same dp_size"):
        DataParallelLoader(dataset, 8, 1, 0, 4).load_state_dict(state)
    with pytest.raises(DataError, match="global batch 8"):
        DataParallelLoader(dataset, 16, 2, 0, 2).load_state_dict(state)
    other = BlankInfillingDataset(real_dataset, BlankInfillingConfig(seq_length=64, task_mask=True),
                                  dataset.special_ids, seed=12,
                                  num_samples=96, mode_group_size=8)
    with pytest.raises(DataError, match="belongs to dataset"):
        DataParallelLoader(other, 8, 2, 0, 2).load_state_dict(state)
    with pytest.raises(DataError, match="no 'micro_batch'"):
        loader.load_state_dict({"consumed_samples": 0})

"""The gloo harness itself: results come back per rank and failures surface."""
import pytest
import torch
import torch.distributed as dist

from tests.distributed import run_distributed


def _allreduce_rank(rank, world_size):
    t = torch.tensor([float(rank)])
    dist.all_reduce(t)
    return t.item()


def _fail_on_rank_one(rank, world_size):
    assert rank != 1, "deliberate failure"
    return rank


def test_results_come_back_from_every_rank():
    assert run_distributed(2, _allreduce_rank) == [1.0, 1.0]


def test_a_failing_rank_fails_the_test():
    with pytest.raises(AssertionError, match="deliberate failure"):
        run_distributed(2, _fail_on_rank_one)

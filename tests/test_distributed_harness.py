"""The gloo harness itself: results come back per rank and failures surface."""
import os

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


def _send_int16(rank, world_size):
    t = torch.zeros(4, dtype=torch.bfloat16).view(torch.int16)
    if rank == 0:
        dist.send(t, dst=1)
    else:
        dist.recv(t, src=0)


def _all_reduce_bool(rank, world_size):
    dist.all_reduce(torch.ones(2, dtype=torch.bool))


def _nccl_types_pass(rank, world_size):
    for dtype in (torch.uint8, torch.int32, torch.int64, torch.bfloat16, torch.float16, torch.float32,
                  torch.float64):
        dist.all_reduce(torch.ones(2, dtype=dtype))
    bits = torch.zeros(3, 4, dtype=torch.bfloat16).view(torch.uint8)
    if rank == 0:
        dist.send(bits, dst=1)
    else:
        dist.recv(bits, src=0)
    return bits.shape


@pytest.mark.parametrize("fn,dtype", [(_send_int16, "torch.int16"), (_all_reduce_bool, "torch.bool")])
def test_nccl_rules_refuse_what_gloo_would_carry(fn, dtype):
    with pytest.raises(AssertionError, match=f"NCCL carries no {dtype}"):
        run_distributed(2, fn)


def test_nccl_types_pass_the_rules():
    assert run_distributed(2, _nccl_types_pass) == [torch.Size([3, 8])] * 2


def test_rules_are_lifted_outside_the_block():
    from tests.nccl_rules import enforce_nccl_rules, wrapped_calls

    with enforce_nccl_rules():
        assert {"all_reduce", "send", "recv", "broadcast", "batch_isend_irecv"} <= set(wrapped_calls())
    assert wrapped_calls() == []


def _environment_and_output(rank, world_size):
    print(f"rank {rank} says hello")
    return os.environ.get("GLMD_HARNESS_PROBE"), os.getcwd()


def test_ranks_see_the_callers_environment_and_directory_and_their_output_is_relayed(monkeypatch, tmp_path,
                                                                                    capsys):
    """The ranks come from a fork server started once per session: what the caller sets afterwards (an
    environment variable, the working directory) must reach them as it did when each rank was spawned."""
    run_distributed(1, _allreduce_rank)   # the fork server runs by now
    monkeypatch.setenv("GLMD_HARNESS_PROBE", "set after the server started")
    monkeypatch.chdir(tmp_path)
    assert run_distributed(2, _environment_and_output) == [("set after the server started", str(tmp_path))] * 2
    out = capsys.readouterr().out
    assert "--- rank 0 ---\nrank 0 says hello\n" in out and "--- rank 1 ---\nrank 1 says hello\n" in out

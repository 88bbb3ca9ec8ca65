"""The process grid: DeepSpeed's rank order, and the members of every group on gloo."""

import pytest
import torch
import torch.distributed as dist

from megatron_glmd.parallel import ParallelGrid
from megatron_glmd.parallel.grid import coord_of
from tests.distributed import run_distributed


@pytest.mark.parametrize("pp,dp,tp", [(1, 1, 1), (2, 1, 2), (2, 3, 2), (5, 1, 8), (1, 4, 2)])
def test_rank_order_is_deepspeeds(pp, dp, tp):
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    topo = PipeModelDataParallelTopology(num_pp=pp, num_mp=tp, num_dp=dp)
    for rank in range(pp * dp * tp):
        ds = topo.get_coord(rank)
        ours = coord_of(rank, tp_size=tp, dp_size=dp)
        assert (ours.pp, ours.dp, ours.tp) == (ds.pipe, ds.data, ds.model)


def _members(group):
    world = dist.get_world_size(group)
    out = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(out, torch.tensor([dist.get_rank()]), group=group)
    return sorted(int(t) for t in out)


def _grid_groups(rank, world, tp, pp):
    grid = ParallelGrid.build(tp_size=tp, pp_size=pp)
    return {"coord": (grid.pp_rank, grid.dp_rank, grid.tp_rank), "tp": _members(grid.tp_group),
            "dp": _members(grid.dp_group), "pp": _members(grid.pp_group), "emb": _members(grid.embedding_group),
            "first": grid.is_first_stage, "last": grid.is_last_stage}


def test_groups_on_gloo_tp2_pp2():
    res = run_distributed(4, _grid_groups, 2, 2)
    expected = {0: (0, 0, 0), 1: (0, 0, 1), 2: (1, 0, 0), 3: (1, 0, 1)}
    for rank, r in enumerate(res):
        assert r["coord"] == expected[rank]
        assert r["tp"] == ([0, 1] if rank < 2 else [2, 3])
        assert r["dp"] == [rank]
        assert r["pp"] == ([0, 2] if rank % 2 == 0 else [1, 3])
        assert r["emb"] == r["pp"]
        assert r["first"] == (rank < 2) and r["last"] == (rank >= 2)


def test_groups_on_gloo_dp2_tp2():
    res = run_distributed(4, _grid_groups, 2, 1)
    for rank, r in enumerate(res):
        assert r["coord"] == (0, rank // 2, rank % 2)
        assert r["tp"] == ([0, 1] if rank < 2 else [2, 3])
        assert r["dp"] == ([0, 2] if rank % 2 == 0 else [1, 3])
        assert r["pp"] == [rank] and r["first"] and r["last"]


def _bad_grid(rank, world):
    try:
        ParallelGrid.build(tp_size=3)
    except ValueError as e:
        return str(e)
    return None


def test_grid_rejects_sizes_that_do_not_divide_the_world():
    msgs = run_distributed(2, _bad_grid)
    assert all("not divisible" in m and "tp_size * pp_size" in m for m in msgs)

"""The (PP, DP, TP) process grid shared by teacher and student.

Global rank = pp * (DP * TP) + dp * TP + tp: tensor parallelism is fastest, exactly the
order of DeepSpeed's ``PipeModelDataParallelTopology(num_pp, num_mp, num_dp)`` so that the
DeepSpeed pipeline engine and this grid agree on who is who.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch.distributed as dist


@dataclass(frozen=True)
class GridCoord:
    pp: int
    dp: int
    tp: int


def rank_of(coord: GridCoord, tp_size: int, dp_size: int) -> int:
    return coord.pp * dp_size * tp_size + coord.dp * tp_size + coord.tp


def coord_of(rank: int, tp_size: int, dp_size: int) -> GridCoord:
    return GridCoord(pp=rank // (dp_size * tp_size), dp=(rank // tp_size) % dp_size, tp=rank % tp_size)


@dataclass
class ParallelGrid:
    """Process groups of one rank in a TP × PP × DP grid.

    Build it with :meth:`ParallelGrid.build` on every rank (group creation is collective).
    ``None`` groups mean "size 1": code that takes a group treats ``None`` as local.
    """

    tp_size: int = 1
    pp_size: int = 1
    dp_size: int = 1
    rank: int = 0
    tp_group: Optional[dist.ProcessGroup] = None
    pp_group: Optional[dist.ProcessGroup] = None
    dp_group: Optional[dist.ProcessGroup] = None
    embedding_group: Optional[dist.ProcessGroup] = None
    pp_ranks: List[int] = field(default_factory=lambda: [0])

    @property
    def coord(self) -> GridCoord:
        return coord_of(self.rank, self.tp_size, self.dp_size)

    @property
    def tp_rank(self) -> int:
        return self.coord.tp

    @property
    def pp_rank(self) -> int:
        return self.coord.pp

    @property
    def dp_rank(self) -> int:
        return self.coord.dp

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    @classmethod
    def single(cls) -> "ParallelGrid":
        """The trivial grid of a non-distributed run."""
        return cls()

    @classmethod
    def build(cls, tp_size: int = 1, pp_size: int = 1, dp_size: Optional[int] = None) -> "ParallelGrid":
        """Create all groups of the grid; every rank of the world must call this with the same sizes."""
        if not dist.is_initialized():
            if (tp_size, pp_size, dp_size or 1) != (1, 1, 1):
                raise RuntimeError("ParallelGrid.build: torch.distributed is not initialised but "
                                   f"tp_size={tp_size}, pp_size={pp_size}, dp_size={dp_size} ask for a grid")
            return cls.single()
        world = dist.get_world_size()
        for name, value in (("tp_size", tp_size), ("pp_size", pp_size)):
            if value < 1:
                raise ValueError(f"ParallelGrid: {name} must be >= 1, got {value}")
        if world % (tp_size * pp_size):
            raise ValueError(f"ParallelGrid: world size {world} is not divisible by "
                             f"tp_size * pp_size = {tp_size} * {pp_size}")
        if dp_size is None:
            dp_size = world // (tp_size * pp_size)
        if tp_size * pp_size * dp_size != world:
            raise ValueError(f"ParallelGrid: tp_size * pp_size * dp_size = {tp_size} * {pp_size} * {dp_size} "
                             f"!= world size {world}")
        rank = dist.get_rank()
        grid = cls(tp_size=tp_size, pp_size=pp_size, dp_size=dp_size, rank=rank)
        me = grid.coord

        def ranks(pp=None, dp=None, tp=None):
            return [rank_of(GridCoord(p, d, t), tp_size, dp_size)
                    for p in ([pp] if pp is not None else range(pp_size))
                    for d in ([dp] if dp is not None else range(dp_size))
                    for t in ([tp] if tp is not None else range(tp_size))]

        # Every rank creates every group in the same order (new_group is collective).
        for p in range(pp_size):
            for d in range(dp_size):
                g = dist.new_group(ranks(pp=p, dp=d))
                if (p, d) == (me.pp, me.dp):
                    grid.tp_group = g
        for p in range(pp_size):
            for t in range(tp_size):
                g = dist.new_group(ranks(pp=p, tp=t))
                if (p, t) == (me.pp, me.tp):
                    grid.dp_group = g
        for d in range(dp_size):
            for t in range(tp_size):
                members = ranks(dp=d, tp=t)
                g = dist.new_group(members)
                emb_members = sorted({members[0], members[-1]})
                emb = dist.new_group(emb_members)
                if (d, t) == (me.dp, me.tp):
                    grid.pp_group, grid.pp_ranks = g, members
                    grid.embedding_group = emb
        return grid

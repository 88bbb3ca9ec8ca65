"""What the import tests (test_glm_import.py, test_hf_import.py) share: a source converted at every
(TP, PP) layout, and each converted checkpoint's project output computed at TP 1 in this process
and at TP 2 and 4 on gloo ranks, whose logits must agree bit for bit."""
import torch
import torch.distributed as dist

from tests.distributed import run_distributed
from tests.model.helpers import gather_along

TPS, PPS = (1, 2, 4), (1, 2)
LAYOUTS = [(tp, pp) for tp in TPS for pp in PPS]


def convert_at_every_layout(convert, source, root, name):
    """{(tp, pp): folder} of ``convert(source, folder, tp, pp)`` at every layout, under ``root``."""
    dirs = {}
    for tp, pp in LAYOUTS:
        dirs[tp, pp] = str(root / f"{name}-tp{tp}-pp{pp}")
        convert(source, dirs[tp, pp], tp, pp)
    return dirs


def gather_vocabulary(hidden, world, group):
    """The whole (padded) vocabulary of this rank's vocab-parallel logits."""
    return gather_along(hidden, -1, group) if world > 1 else hidden


def tensor_parallel_group(world):
    return dist.group.WORLD if world > 1 else None


def at_every_tp(project, converted, batch, logits_of=lambda result: result):
    """{(name, tp, pp): rank 0's ``project(rank, world, dirs, batch)[name, pp]``} for ``converted`` =
    {name: (reference, {(tp, pp): folder})}, after checking that every rank's logits equal rank 0's."""
    out = {}
    for tp in TPS:
        dirs = {(name, pp): d[tp, pp] for name, (_, d) in converted.items() for pp in PPS}
        per_rank = [project(0, 1, dirs, batch)] if tp == 1 else run_distributed(tp, project, dirs, batch)
        for other in per_rank[1:]:
            assert all(torch.equal(logits_of(other[k]), logits_of(per_rank[0][k])) for k in dirs)
        out.update({(name, tp, pp): value for (name, pp), value in per_rank[0].items()})
    return out

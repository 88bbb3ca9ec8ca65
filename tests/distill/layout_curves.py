"""What the engine's layout tests share (test_engine_layouts.py and test_decoder_layouts.py for the
two families, test_compressed_engine.py, and the task chains of task_runs.py): each (TP, PP, DP)
layout runs in its own set of gloo ranks, and a curve of every rank of a layout equals the
single-process run's (1, 1, 1)."""
import torch

from tests.distributed import run_distributed


def run_layouts(tmp_path_factory, layouts, chain, files, name: str) -> dict:
    """``{(tp, pp, dp): per-rank results}`` of ``chain(rank, world, tp, pp, workdir, *files)`` run at every
    layout on tp * pp * dp ranks, each in its own folder."""
    results = {}
    for tp, pp, dp in layouts:
        workdir = str(tmp_path_factory.mktemp(f"{name}_tp{tp}pp{pp}dp{dp}"))
        results[(tp, pp, dp)] = run_distributed(tp * pp * dp, chain, tp, pp, workdir, *files)
    return results


def assert_curve_matches_reference(chains: dict, layout, curve: str) -> None:
    """Every rank's ``curve`` at ``layout`` equals (1,1,1)'s within 2e-4: fp32 sums in another order per
    layout, over a few steps that engine_cases.py's large Adam eps keeps from amplifying them."""
    reference = chains[(1, 1, 1)][0][curve]
    assert len(reference) >= 3 and all(torch.isfinite(torch.tensor(reference)))
    for rank, result in enumerate(chains[layout]):
        torch.testing.assert_close(torch.tensor(result[curve]), torch.tensor(reference), rtol=2e-4, atol=2e-4,
                                   msg=f"{curve} curve of layout {layout}, rank {rank}")

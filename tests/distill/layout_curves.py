"""What the engine's layout tests share (test_engine_layouts.py and test_decoder_layouts.py for the
two families, test_compressed_engine.py): each (TP, PP, DP) layout runs in its own set of gloo ranks,
and a curve of every rank of a layout equals the single-process run's (1, 1, 1)."""
import torch

from tests.distributed import run_distributed


def run_every_layout(layouts, tmp_path_factory, prefix, fn, *args):
    """{(tp, pp, dp): per-rank results of ``fn(rank, world, tp, pp, workdir, *args)``} on tp * pp * dp ranks,
    each layout in a fresh folder."""
    results = {}
    for tp, pp, dp in layouts:
        workdir = str(tmp_path_factory.mktemp(f"{prefix}tp{tp}pp{pp}dp{dp}"))
        results[(tp, pp, dp)] = run_distributed(tp * pp * dp, fn, tp, pp, workdir, *args)
    return results


def assert_curve_matches_single_process(results, layout, curve):
    """Every rank's ``curve`` at ``layout`` equals rank 0's at (1, 1, 1) within 2e-4: fp32 sums in another
    order per layout, over a few steps that engine_cases.py's large Adam eps keeps from amplifying them."""
    reference = results[(1, 1, 1)][0][curve]
    for rank, result in enumerate(results[layout]):
        torch.testing.assert_close(torch.tensor(result[curve]), torch.tensor(reference), rtol=2e-4, atol=2e-4,
                                   msg=f"{curve} curve of layout {layout}, rank {rank}")

"""Golden losses (torchtitan's habit): the first losses of fixed tiny runs, recorded from the engine
before its refactor into trainer / engine / objective modules (``python -m tests.distill.golden_runs``
printed them), must be reproduced by every later version of the engine. A change that moves these
numbers changes what the engine computes and has to say why."""
import pytest
import torch

from tests.distill.golden_runs import GOLDEN_LAYOUTS, golden_losses

RECORDED = {
    (1, 1, 1): {
        "pretrain": [5.655743598937988, 5.417075157165527, 5.191634178161621, 5.020856857299805, 4.582787036895752],
        "distill": [0.17727413773536682, 0.13365969061851501, 0.0809294730424881, 0.05193343013525009,
                    0.03894577920436859],
    },
    (2, 2, 1): {
        "pretrain": [5.655743598937988, 5.4170756340026855, 5.191634178161621, 5.020856857299805,
                     4.582787036895752],
        "distill": [0.1772742122411728, 0.1336594820022583, 0.0809343159198761, 0.051932476460933685,
                    0.038948021829128265],
    },
}


@pytest.mark.parametrize("layout", GOLDEN_LAYOUTS)
def test_first_losses_match_the_recorded_run(layout):
    for rank, result in enumerate(golden_losses(*layout)):
        for mode, recorded in RECORDED[layout].items():
            torch.testing.assert_close(torch.tensor(result[mode], dtype=torch.float64),
                                       torch.tensor(recorded, dtype=torch.float64), rtol=1e-6, atol=1e-6,
                                       msg=lambda m: f"{mode} losses at layout {layout}, rank {rank}: {m}")

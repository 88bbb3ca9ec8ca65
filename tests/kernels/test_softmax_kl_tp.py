"""softmax_kl over a vocabulary split across 2 and 4 gloo ranks (PyTorch path)."""
from __future__ import annotations

import pytest
import torch

from tests.distributed import run_distributed
from tests.kernels import tp_cases
from tests.kernels.tp_cases import make_case

pytestmark = pytest.mark.slow

# width · world >= v; the padding starts inside the last shard (or earlier, see TP=4)
CASES = {
    2: [make_case(6, 2 * 640 - 37, 640),
        make_case(5, 2 * 640 - 300, 640, tau=1.0, reduction="none"),
        make_case(7, 2 * 333, 333, dtype=torch.bfloat16, tau=2.0, reduction="mean"),
        make_case(1, 7, 4, masked=False)],
    4: [make_case(6, 4 * 300 - 111, 300),
        make_case(5, 3 * 300 - 20, 300, tau=2.0, reduction="none"),  # last shard all padding
        make_case(4, 4 * 257, 257, dtype=torch.float16, tau=1.0, reduction="mean"),
        make_case(3, 4 * 1271 - 1000, 1271, tau=15.0, masked=False)],
}


def _worker(rank, world, cases):
    import os
    os.environ.pop("TRITON_INTERPRET", None)  # this test is about the PyTorch path
    return tp_cases.run_cases(rank, world, cases, "torch")


@pytest.mark.parametrize("world", [2, 4])
def test_tensor_parallel_matches_full_vocabulary(world):
    cases = CASES[world]
    results = run_distributed(world, _worker, cases)
    tp_cases.check(results, cases)
    assert [r["vocab_end"] for r in results[-1]] == [
        max(0, min(c["width"], c["v"] - (world - 1) * c["width"])) for c in cases]

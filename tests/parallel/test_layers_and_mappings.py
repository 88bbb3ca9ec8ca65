"""TP layers and mappings on gloo against single-process torch references."""
import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.parallel import (ColumnParallelLinear, ParallelGrid, RowParallelLinear, VocabParallelEmbedding,
                                    copy_to_tp, gather_from_tp, initialize_parameters, reduce_from_tp,
                                    scatter_to_tp)
from tests.distributed import run_distributed


def _mappings(rank, world):
    grid = ParallelGrid.build(tp_size=world)
    g = grid.tp_group
    x = torch.arange(world * 3, dtype=torch.float32).reshape(1, world * 3) + 10 * rank
    out = {}
    # copy: identity forward, all-reduce backward
    a = x.clone().requires_grad_()
    copy_to_tp(a, g).mul(rank + 1).sum().backward()
    out["copy_fwd_grad"] = a.grad
    # reduce: all-reduce forward, identity backward
    b = x.clone().requires_grad_()
    y = reduce_from_tp(b, g)
    out["reduce_fwd"] = y.detach()
    (y * 3).sum().backward()
    out["reduce_grad"] = b.grad
    # scatter: own slice forward, gather backward
    c = torch.arange(world * 2, dtype=torch.float32).reshape(1, -1).requires_grad_()
    s = scatter_to_tp(c, g)
    out["scatter_fwd"] = s.detach()
    (s * (rank + 1)).sum().backward()
    out["scatter_grad"] = c.grad
    # gather: all-gather forward, own slice backward
    d = torch.full((1, 2), float(rank)).requires_grad_()
    gathered = gather_from_tp(d, g)
    out["gather_fwd"] = gathered.detach()
    (gathered * torch.arange(world * 2, dtype=torch.float32)).sum().backward()
    out["gather_grad"] = d.grad
    return out


def test_mappings_forward_and_backward():
    world = 2
    res = run_distributed(world, _mappings)
    xs = [torch.arange(world * 3, dtype=torch.float32).reshape(1, -1) + 10 * r for r in range(world)]
    for rank, out in enumerate(res):
        assert torch.equal(out["copy_fwd_grad"], torch.full((1, 6), float(sum(r + 1 for r in range(world)))))
        assert torch.equal(out["reduce_fwd"], xs[0] + xs[1])
        assert torch.equal(out["reduce_grad"], torch.full((1, 6), 3.0))
        assert torch.equal(out["scatter_fwd"], torch.tensor([[2.0 * rank, 2.0 * rank + 1]]))
        assert torch.equal(out["scatter_grad"], torch.tensor([[1.0, 1.0, 2.0, 2.0]]))
        assert torch.equal(out["gather_fwd"], torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
        assert torch.equal(out["gather_grad"], torch.tensor([[2.0 * rank, 2.0 * rank + 1]]))


def _layers(rank, world):
    grid = ParallelGrid.build(tp_size=world)
    g = grid.tp_group
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    ids = torch.tensor([[0, 5, 9, 15], [3, 8, 12, 1]])
    col = ColumnParallelLinear(8, 12, gather_output=True, tp_group=g)
    row = RowParallelLinear(12, 8, input_is_parallel=False, tp_group=g)
    emb = VocabParallelEmbedding(16, 4, tp_group=g)
    for module, prefix in ((col, "col"), (row, "row"), (emb, "emb")):
        initialize_parameters(((f"{prefix}.{n}", p) for n, p in module.named_parameters()), seed=1)
        with torch.no_grad():
            for p in module.parameters():
                if p.init[0] == "zeros":
                    p.add_(0.5)  # make biases matter
    xr = x.clone().requires_grad_()
    y = row(col(xr))
    e = emb(ids)
    (y.square().sum() + e.pow(3).sum()).backward()
    return {"y": y.detach(), "e": e.detach(), "xgrad": xr.grad,
            "col_w_grad": col.weight.grad, "row_w_grad": row.weight.grad, "emb_grad": emb.weight.grad}


@pytest.mark.parametrize("world", [2, 4])
def test_parallel_layers_match_dense_reference(world):
    ref = _layers(0, 1)
    res = run_distributed(world, _layers)
    for rank, out in enumerate(res):
        for key in ("y", "e", "xgrad"):
            torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)
    cat0 = lambda key, dim: torch.cat([r[key] for r in res], dim=dim)  # noqa: E731
    torch.testing.assert_close(cat0("col_w_grad", 0), ref["col_w_grad"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cat0("row_w_grad", 1), ref["row_w_grad"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cat0("emb_grad", 0), ref["emb_grad"], rtol=1e-5, atol=1e-6)


def test_dense_reference_is_plain_linear_algebra():
    """Single-process parallel layers are ordinary nn ops (the reference the TP test relies on)."""
    ref = _layers(0, 1)
    col = ColumnParallelLinear(8, 12)
    row = RowParallelLinear(12, 8)
    initialize_parameters((("col." + n, p) for n, p in col.named_parameters()), seed=1)
    initialize_parameters((("row." + n, p) for n, p in row.named_parameters()), seed=1)
    torch.manual_seed(0)
    x = torch.randn(3, 8)
    y = F.linear(F.linear(x, col.weight, col.bias + 0.5), row.weight, row.bias + 0.5)
    torch.testing.assert_close(y, ref["y"], rtol=1e-6, atol=1e-6)

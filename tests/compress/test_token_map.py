"""The chunked token map equals a naive full-matrix argmax, ties and protected tokens included."""
import itertools

import pytest
import torch

from megatron_glmd.compress.token_map import MAPPINGS, chunk_rows_for, map_candidates, map_tokens
from megatron_glmd.data import DataError

SPECIALS = list(range(10))
PROTECTED = [37, 120]          # e.g. verbalizer tokens: kept, ordinary (may be map targets)


def naive_scores(e: torch.Tensor, mapping: str) -> torch.Tensor:
    """The full v × v score matrix in fp64, each formula written out."""
    e = e.double()
    if mapping == "inner":
        return e @ e.t()
    if mapping == "cosine":
        norms = e.norm(dim=1).clamp_min(1e-12)
        return (e @ e.t()) / norms[:, None] / norms[None, :]
    return -((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)


def naive_map(e, kept, mapping, specials=SPECIALS, unk_id=1):
    """Row by row: kept → itself; dropped → the best allowed target, lowest id among equals."""
    v = e.shape[0]
    allowed = torch.zeros(v, dtype=torch.bool)
    allowed[kept] = True
    kept_set = set(kept.tolist())
    allowed[specials] = False
    out = torch.arange(v)
    if mapping == "unk":
        out[[i for i in range(v) if i not in kept_set]] = unk_id
        return out
    scores = naive_scores(e, mapping)
    for i in range(v):
        if i not in kept_set:
            row = scores[i].masked_fill(~allowed, float("-inf"))
            out[i] = min(j for j in range(v) if allowed[j] and row[j] == row.max())
    return out


def dyadic_embedding(v=300, h=16, seed=0):
    """Rows whose norms are powers of two and entries small integers: every score is exact in fp32
    (cosine included), and many rows repeat a direction at another scale, so exact ties abound."""
    g = torch.Generator().manual_seed(seed)
    patterns = [[1] + [0] * 15, [1] * 4 + [0] * 12, [1] * 16, [3] + [1] * 7 + [0] * 8, [2] * 4 + [0] * 12]
    rows = []
    for _ in range(v):
        p = torch.tensor(patterns[int(torch.randint(len(patterns), (1,), generator=g))], dtype=torch.float32)
        p = p[torch.randperm(h, generator=g)] * (torch.randint(0, 2, (h,), generator=g) * 2 - 1)
        rows.append(p * 2.0 ** int(torch.randint(0, 3, (1,), generator=g)))
    return torch.stack(rows)


def kept_set(v, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    rest = [i for i in torch.randperm(v, generator=g).tolist() if i not in SPECIALS + PROTECTED]
    return torch.tensor(SPECIALS + PROTECTED + rest[:k - len(SPECIALS) - len(PROTECTED)])


def count_tied_rows(e, kept, mapping):
    candidates = map_candidates(e.shape[0], kept, SPECIALS)
    dropped = [i for i in range(e.shape[0]) if i not in set(kept.tolist())]
    s = naive_scores(e, mapping)[dropped][:, candidates]
    return int(((s == s.max(dim=1, keepdim=True).values).sum(dim=1) > 1).sum())


@pytest.mark.parametrize("mapping,chunk_rows", list(itertools.product(MAPPINGS, [1, 7, None])))
def test_map_equals_naive_argmax_with_ties(mapping, chunk_rows):
    e = dyadic_embedding()
    kept = kept_set(300, 96)
    got = map_tokens(e, kept, mapping=mapping, special_ids=SPECIALS, protected_ids=PROTECTED, unk_id=1,
                     chunk_rows=chunk_rows, device="cpu", progress=False)
    assert torch.equal(got, naive_map(e, kept, mapping))
    assert torch.equal(got[kept], kept)                      # kept (and protected) map to themselves
    assert not set(got[SPECIALS + PROTECTED].tolist()) - set(SPECIALS + PROTECTED)
    if mapping != "unk":
        assert count_tied_rows(e, kept, mapping) > 10         # the test really exercises ties
        dropped = torch.tensor([i for i in range(300) if i not in set(kept.tolist())])
        assert not set(got[dropped].tolist()) & set(SPECIALS)


@pytest.mark.parametrize("mapping", ["inner", "cosine", "euclidean"])
def test_map_equals_naive_argmax_on_gaussian_fp64_rows(mapping):
    e = torch.randn(400, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    e[200] = e[150]                                             # an exact duplicate: tie between kept rows
    kept = torch.tensor(SPECIALS + PROTECTED + list(range(140, 230)))
    got = map_tokens(e, kept, mapping=mapping, special_ids=SPECIALS, protected_ids=PROTECTED,
                     max_chunk_bytes=5000, device="cpu", progress=False)
    assert torch.equal(got, naive_map(e, kept, mapping))


def test_special_hub_is_never_a_target_and_protected_may_be():
    e = dyadic_embedding(seed=5)
    e[3] = 64.0                                                 # a huge special row: the inner-product hub
    e[37] = 32.0                                                # a protected ordinary token: the runner-up
    kept = kept_set(300, 64, seed=5)
    got = map_tokens(e, kept, mapping="inner", special_ids=SPECIALS, protected_ids=PROTECTED, device="cpu",
                     progress=False)
    dropped = torch.tensor([i for i in range(300) if i not in set(kept.tolist())])
    unrestricted = naive_map(e, kept, "inner", specials=[])
    assert (unrestricted[dropped] == 3).sum() > 0               # allowed, the special would be a target
    assert not (got[dropped] == 3).any() and (got[dropped] == 37).sum() > 0


def test_bad_inputs():
    e = torch.randn(50, 8)
    kept = torch.tensor(SPECIALS + [20, 21])
    with pytest.raises(DataError, match="mapping must be one of"):
        map_tokens(e, kept, mapping="dot", progress=False)
    with pytest.raises(DataError, match=r"protected ids \[30\] are not in the kept set"):
        map_tokens(e, kept, protected_ids=[30], progress=False)
    with pytest.raises(DataError, match="kept ids hold an id outside|kept ids holds an id outside"):
        map_tokens(e, torch.tensor([0, 50]), progress=False)
    with pytest.raises(DataError, match="duplicates"):
        map_tokens(e, torch.tensor([0, 0, 1]), progress=False)
    with pytest.raises(DataError, match="no ordinary token"):
        map_tokens(e, torch.tensor(SPECIALS), special_ids=SPECIALS, progress=False)
    with pytest.raises(DataError, match="the unk mapping needs a kept unknown token"):
        map_tokens(e, kept, mapping="unk", unk_id=40, progress=False)
    bad = e.clone()
    bad[45, 0] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        map_tokens(bad, kept, progress=False)
    assert torch.equal(map_tokens(e, torch.arange(50), progress=False), torch.arange(50))   # nothing dropped


def test_chunk_rows_bound_the_buffer():
    assert chunk_rows_for(25216, 4, 256 << 20) == (256 << 20) // (25216 * 4)
    assert chunk_rows_for(10 ** 9, 4, 1) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mapping", MAPPINGS)
def test_gpu_map_equals_naive_argmax(mapping):
    e = dyadic_embedding()
    kept = kept_set(300, 96)
    got = map_tokens(e, kept, mapping=mapping, special_ids=SPECIALS, protected_ids=PROTECTED, unk_id=1,
                     chunk_rows=7, device="cuda", progress=False)
    assert torch.equal(got, naive_map(e, kept, mapping))

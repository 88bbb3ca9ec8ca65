"""The token map: every dropped id to a kept id, by the teacher's input-embedding rows.

docs/design.md, "Vocabulary compression": ``map(w_m) = argmax_{w_c} score(E_T[w_m], E_T[w_c])``
with ``score`` one of

==========  ==========================================================================
inner       ``⟨x, c⟩`` (the paper's choice: the same product that decodes)
cosine      ``⟨x, c⟩ / (‖x‖ ‖c‖)`` (norms clamped at 1e-12)
euclidean   ``−‖x − c‖²``, computed as ``2⟨x, c⟩ − ‖c‖²`` (``‖x‖²`` is the same for every c)
unk         no score: every dropped id maps to the unknown token
==========  ==========================================================================

Kept ids map to themselves (protected tokens are kept, so they do too). Targets are kept
*ordinary* tokens: special and control ids are never targets (with them allowed, a small
teacher sends most dropped words to [CLS] or [SEP], whose rows only the output layer trains).
Ties go to the lowest id: the candidate columns are in ascending id order and ``argmax``
returns the first maximum.

Bounded memory: the ``(v − K) × K`` score matrix is never formed. Dropped rows are scored in
chunks against all candidates; one ``rows × K`` buffer (``max_chunk_bytes``, 256 MiB by
default) is reused, so peak extra memory is that buffer plus the ``K × h`` candidate matrix.
On a GPU, when one is available, the candidates and one chunk at a time live on the device.
Scores are computed in fp32 (fp64 when the embedding is fp64), whatever the checkpoint's dtype.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..data.errors import DataError

MAPPINGS = ("inner", "cosine", "euclidean", "unk")
DEFAULT_CHUNK_BYTES = 256 << 20
_NORM_EPS = 1e-12


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _ids(values: Iterable[int], vocab_size: int, what: str) -> torch.Tensor:
    if torch.is_tensor(values):
        ids = values.detach().to("cpu", torch.long).flatten()
    else:
        values = values if isinstance(values, np.ndarray) else list(values)
        ids = torch.from_numpy(np.array(values, dtype=np.int64).reshape(-1))
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise DataError(f"{what} holds an id outside the vocabulary [0, {vocab_size})")
    return ids


def _member(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    flags = torch.zeros(vocab_size, dtype=torch.bool)
    flags[ids] = True
    return flags


def map_candidates(vocab_size: int, kept_ids, special_ids=()) -> torch.Tensor:
    """The ids a dropped token may map to: kept and not special, ascending."""
    allowed = _member(_ids(kept_ids, vocab_size, "kept ids"), vocab_size)
    allowed[_ids(special_ids, vocab_size, "special ids")] = False
    return allowed.nonzero().flatten()


def chunk_rows_for(num_candidates: int, element_bytes: int, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that one ``rows × num_candidates`` score buffer fits ``max_chunk_bytes``."""
    return max(1, max_chunk_bytes // max(1, num_candidates * element_bytes))


def _prepare(vectors: torch.Tensor, mapping: str, dim: int = 1) -> torch.Tensor:
    """Cosine scores are inner products of unit vectors (``dim``: the dimension of one vector)."""
    if mapping == "cosine":
        return vectors / vectors.norm(dim=dim, keepdim=True).clamp_min(_NORM_EPS)
    return vectors


@torch.no_grad()
def map_tokens(embedding: torch.Tensor, kept_ids, *, mapping: str = "inner", special_ids=(),
               protected_ids=(), unk_id: Optional[int] = None, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
               chunk_rows: Optional[int] = None, device=None, progress: bool = True) -> torch.Tensor:
    """``token_map[id]`` (int64, ``[v]``) for the teacher word embedding ``embedding`` ``[v, h]``.

    ``kept_ids``: the kept set; ``special_ids``: never targets; ``protected_ids``: must be kept;
    ``unk_id``: the target of the ``unk`` mapping (must be kept). ``chunk_rows`` overrides the
    rows per chunk derived from ``max_chunk_bytes``.
    """
    if mapping not in MAPPINGS:
        raise DataError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")
    if embedding.dim() != 2 or not embedding.is_floating_point():
        raise DataError(f"the word embedding must be a float [vocab, hidden] matrix, got "
                        f"{embedding.dtype} {tuple(embedding.shape)}")
    vocab_size = embedding.shape[0]
    kept = _ids(kept_ids, vocab_size, "kept ids")
    is_kept = _member(kept, vocab_size)
    if int(is_kept.sum()) != kept.numel():
        raise DataError("kept ids contain duplicates")
    missing = [int(i) for i in _ids(protected_ids, vocab_size, "protected ids") if not is_kept[i]]
    if missing:
        raise DataError(f"protected ids {missing[:5]} are not in the kept set")
    token_map = torch.arange(vocab_size, dtype=torch.long)
    dropped = (~is_kept).nonzero().flatten()
    if dropped.numel() == 0:
        return token_map
    if mapping == "unk":
        if unk_id is None or not 0 <= int(unk_id) < vocab_size or not is_kept[int(unk_id)]:
            raise DataError(f"the unk mapping needs a kept unknown token, got id {unk_id}")
        token_map[dropped] = int(unk_id)
        return token_map

    candidates = map_candidates(vocab_size, kept, special_ids)
    if candidates.numel() == 0:
        raise DataError("the kept set holds no ordinary token to map dropped tokens to")
    if not bool(torch.isfinite(embedding).all()):
        raise DataError("the word embedding holds non-finite values")
    device = torch.device(device) if device is not None else default_device()
    dtype = torch.float64 if embedding.dtype == torch.float64 else torch.float32
    # The candidates as columns, [h, candidates] (gathered straight into that layout: BLAS's fast
    # one on the CPU, and a single copy in memory).
    targets_t = _prepare(embedding.t().index_select(1, candidates).to(device=device, dtype=dtype), mapping, dim=0)
    # euclidean: score = 2<x, c> - |c|^2, one addmm into the buffer with the bias row broadcast.
    bias = -(targets_t * targets_t).sum(dim=0) if mapping == "euclidean" else None
    rows = chunk_rows or chunk_rows_for(candidates.numel(), targets_t.element_size(), max_chunk_bytes)
    rows = min(rows, dropped.numel())
    buffer = torch.empty(rows, candidates.numel(), dtype=dtype, device=device)
    candidates_dev = candidates.to(device)
    with tqdm(total=dropped.numel(), unit="row", desc=f"token map ({mapping})", disable=not progress) as bar:
        for start in range(0, dropped.numel(), rows):
            ids = dropped[start:start + rows]
            x = _prepare(embedding[ids].to(device=device, dtype=dtype), mapping)
            scores = buffer[:ids.numel()]
            if bias is None:
                torch.mm(x, targets_t, out=scores)
            else:
                torch.addmm(bias, x, targets_t, alpha=2.0, out=scores)
            token_map[ids] = candidates_dev[scores.argmax(dim=1)].cpu()
            bar.update(ids.numel())
    return token_map

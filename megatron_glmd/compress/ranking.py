"""The vocabulary ranking and the kept set ``w_c`` (docs/design.md, "Vocabulary compression").

Protected tokens (every special token of the tokenizer and every listed token, e.g. verbalizer
tokens) rank first, in ascending id order; then all other ids by descending corpus count, ties
by ascending id. The first ``K = ceil(v · r_v / 128) · 128`` ids of the ranking form the kept
set; a kept set smaller than the protected set is refused, so protected tokens are always kept.

NumPy only: ``tools/count_vocab_freq.py`` ranks without importing torch.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterable, List

import numpy as np

from ..data.errors import DataError

# The tokenizer attributes that name special ids (data/tokenizer.py, data/glm_bpe.py,
# data/hf_tokenizer.py; None where a tokenizer lacks the role): none of them is ever a mapping
# target, all of them are protected. Other added tokens of a tokenizer.json (Llama-3's 250 reserved
# ones, chat markers) rank by their counts like any token; list the ones you need as protected.
SPECIAL_ID_ATTRIBUTES = ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id", "smask_id", "gmask_id",
                         "sop_id", "eop_id", "dblock_id", "eod_id", "bos_id")


def special_token_ids(tokenizer) -> List[int]:
    """The distinct special ids a tokenizer object declares, ascending."""
    ids = {int(getattr(tokenizer, name)) for name in SPECIAL_ID_ATTRIBUTES
           if getattr(tokenizer, name, None) is not None}
    return sorted(ids)


def kept_vocab_size(vocab_size: int, ratio: float) -> int:
    """``K = ceil(v · r_v / 128) · 128``: the number of top-ranked ids a compressed vocabulary keeps
    (may exceed ``v`` when ``r_v`` is close to 1; :func:`kept_token_ids` caps it)."""
    if vocab_size < 1:
        raise DataError(f"vocab size must be positive, got {vocab_size}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise DataError(f"vocabulary ratio r_v must be in (0, 1], got {ratio}")
    # Exact rational arithmetic on the float's decimal value avoids ceil(128.00000000000003) = 129.
    return math.ceil(Fraction(vocab_size) * Fraction(str(ratio)) / 128) * 128


def rank_vocabulary(counts: np.ndarray, protected_ids: Iterable[int] = ()) -> np.ndarray:
    """Ids in rank order: ``protected_ids`` (pass the specials too) by id, then count desc, id asc."""
    counts = np.asarray(counts, dtype=np.int64)
    vocab_size = counts.size
    is_protected = np.zeros(vocab_size, dtype=bool)
    for token_id in protected_ids:
        token_id = int(token_id)
        if not 0 <= token_id < vocab_size:
            raise DataError(f"protected token id {token_id} is outside the vocabulary [0, {vocab_size})")
        is_protected[token_id] = True
    ids = np.arange(vocab_size, dtype=np.int64)
    # lexsort: the last key is the primary one. Protected first; then -count; then id.
    return np.lexsort((ids, np.where(is_protected, 0, -counts), ~is_protected))


def kept_token_ids(order: np.ndarray, kept_size: int, num_protected: int = 0) -> np.ndarray:
    """The ``min(K, v)`` top-ranked ids of ``order`` (the kept set ``w_c``), in rank order."""
    order = np.asarray(order, dtype=np.int64)
    if kept_size < 1:
        raise DataError(f"kept size K must be positive, got {kept_size}")
    if kept_size < num_protected:
        raise DataError(f"K = {kept_size} cannot hold the {num_protected} protected tokens; raise r_v or K")
    return order[:min(kept_size, order.size)].copy()

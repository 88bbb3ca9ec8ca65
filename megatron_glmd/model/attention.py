"""One attention core for every model family: a mask *description* built from per-sample tensors,
and :func:`attend`, which runs it through a fused FlexAttention kernel or through SDPA.

A mask is described, not materialised: GLM's blank-infilling mask is ``sep`` (Part A, attended
bidirectionally) and ``length`` (padding) per sample; a decoder's is ``sep = 0`` (causal) plus,
for packed documents, a document id per token (a query sees only keys of its own document). One
predicate, :meth:`AttentionMask.allowed`, defines the mask; it is both FlexAttention's
``mask_mod`` (a block mask lets the fused kernel skip fully masked tiles) and, evaluated on
broadcast index grids, the materialised boolean ``[b, 1, s, s]`` mask that SDPA takes.

Which path runs (docs/design.md, "Attention"): FlexAttention has no dropout, so a model that draws
attention dropout (training with ``attention_dropout > 0``) runs SDPA with the materialised mask
(its dropout drawn on the TP stream, replayed exactly by recompute); torch 2.13's FlexAttention
has no backward on the CPU, so a CPU forward that builds a graph runs SDPA too. Otherwise
``model.attention`` decides: ``flex``, ``sdpa``, or ``auto`` = flex on CUDA and SDPA on the CPU,
where eager flex is an unfused reference that materialises the scores (6x slower than SDPA at
s = 512, measured). A
stage builds its mask once per micro-batch (:meth:`AttentionMask.prepare`, outside any compiled
region) and every layer of the stage shares it.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from ..config.model import ATTENTION_SETTINGS
from ..parallel.random import get_rng_tracker


def attention_path(setting: str, *, dropout_active: bool, device_type: str, needs_grad: bool = False) -> str:
    """The kernel family a model runs: ``"flex"`` or ``"sdpa"`` (see the module docstring)."""
    if setting not in ATTENTION_SETTINGS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_SETTINGS)}, got {setting!r}")
    if dropout_active:
        return "sdpa"        # flex_attention cannot drop attention probabilities
    if device_type == "cpu" and needs_grad:
        return "sdpa"        # torch 2.13's FlexAttention has no backward on the CPU
    if setting == "auto":
        return "flex" if device_type == "cuda" else "sdpa"
    return setting


def describe_attention(setting: str, attention_dropout: float, device_type: str) -> str:
    """One human line for a run's log: which path training and evaluation take."""
    train = attention_path(setting, dropout_active=attention_dropout > 0, device_type=device_type, needs_grad=True)
    evaluate = attention_path(setting, dropout_active=False, device_type=device_type)
    why = ""
    if train != evaluate:
        why = (f" (attention_dropout {attention_dropout:g}: flex has no dropout)" if attention_dropout > 0
               else " (flex has no CPU backward)")
    return f"attention {setting} on {device_type}: training {train}{why}, evaluation {evaluate}"


class AttentionMask:
    """The mask of one micro-batch: True where query ``q`` of sample ``b`` may attend to key ``kv``.

    ``((kv < sep[b]) | (kv <= q)) & (kv < length[b]) & same_document(b, q, kv)``, or ``q == kv``:
    keys before ``sep`` are visible to every query (GLM's Part A), later keys causally; padding keys
    are hidden; a padding query sees itself so that no softmax row is empty (its output is unused).
    """

    def __init__(self, sep: torch.Tensor, length: torch.Tensor, seq_len: int,
                 document: Optional[torch.Tensor] = None):
        if sep.dim() != 1 or length.shape != sep.shape:
            raise ValueError(f"sep and length must both be [batch], got {tuple(sep.shape)} and {tuple(length.shape)}")
        if document is not None and document.shape != (sep.shape[0], seq_len):
            raise ValueError(f"document ids must be [batch, {seq_len}], got {tuple(document.shape)}")
        self.sep, self.length, self.seq_len, self.document = sep, length, seq_len, document
        self.path: Optional[str] = None
        self.dense: Optional[torch.Tensor] = None
        self.block = None

    @classmethod
    def glm(cls, sep: torch.Tensor, length: torch.Tensor, seq_len: int) -> "AttentionMask":
        """GLM's blank-infilling mask: Part A (``< sep``) bidirectional, Part B causal, padding hidden."""
        return cls(sep, length, seq_len)

    @classmethod
    def causal(cls, length: torch.Tensor, seq_len: int, document: Optional[torch.Tensor] = None) -> "AttentionMask":
        """A decoder's mask: causal, padding hidden, and (with ``document`` ids ``[b, s]``) never across
        a document boundary."""
        return cls(torch.zeros_like(length), length, seq_len, document)

    def allowed(self, b, h, q, kv):
        """The mask predicate over index tensors (FlexAttention's ``mask_mod`` signature)."""
        return _mask_mod(self.sep, self.length, self.document)(b, h, q, kv)

    def materialise(self) -> torch.Tensor:
        """The boolean ``[b, 1, s, s]`` mask, by evaluating :meth:`allowed` on broadcast index grids."""
        device, s = self.length.device, self.seq_len
        b = torch.arange(self.length.shape[0], device=device).view(-1, 1, 1)
        q = torch.arange(s, device=device).view(1, s, 1)
        kv = torch.arange(s, device=device).view(1, 1, s)
        return self.allowed(b, None, q, kv).unsqueeze(1)

    def prepare(self, path: str) -> "AttentionMask":
        """Build the form ``path`` needs (once per micro-batch, before the layers run; compiled layers
        then see a ready mask and never a lazy build)."""
        if path not in ("flex", "sdpa"):
            raise ValueError(f"unknown attention path {path!r}")
        self.path = path
        if path == "sdpa" and self.dense is None:
            self.dense = self.materialise()
        if path == "flex" and self.block is None:
            self.block = create_block_mask(_mask_mod(self.sep, self.length, self.document), self.length.shape[0],
                                           None, self.seq_len, self.seq_len, device=self.length.device)
        return self


def _mask_mod(sep: torch.Tensor, length: torch.Tensor, document: Optional[torch.Tensor]):
    """The predicate as a plain 4-argument function (FlexAttention inspects a mask_mod's arity)."""
    def mask_mod(b, h, q, kv):
        ok = ((kv < sep[b]) | (kv <= q)) & (kv < length[b])
        if document is not None:
            ok = ok & (document[b, q] == document[b, kv])
        return ok | (q == kv)
    return mask_mod


def document_ids(tokens: torch.Tensor, eod_id: int) -> torch.Tensor:
    """Per-token document index ``[b, s]`` of packed documents: an EOD token ends (and belongs to)
    its document, the next token starts the next one. For :meth:`AttentionMask.causal`."""
    is_eod = (tokens == eod_id).long()
    return is_eod.cumsum(dim=-1) - is_eod


_compiled_flex = None


def _flex(q, k, v, block_mask, enable_gqa: bool):
    """flex_attention, compiled where that makes it fused: inside a compiled layer it is traced as
    is; on CUDA in eager mode through one ``torch.compile`` of the function; on the CPU in eager
    mode it runs PyTorch's unfused reference (exact; a testing path, see the module docstring)."""
    global _compiled_flex
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)
    if q.device.type == "cuda":
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
           dropout_p: float = 0.0) -> torch.Tensor:
    """Softmax attention ``[b, heads, s, head_dim]`` under ``mask`` (prepared by the stage).

    ``k`` and ``v`` may have fewer heads than ``q`` (grouped-query attention: each KV head serves
    ``heads / kv_heads`` query heads). ``dropout_p > 0`` needs the SDPA path; its mask is drawn on
    the tracker's per-TP-rank stream, since the probabilities belong to this rank's heads.
    """
    gqa = k.shape[1] != q.shape[1]
    if mask.path == "flex":
        if dropout_p > 0:
            raise ValueError("flex attention has no dropout; prepare the mask for 'sdpa' when dropout is drawn")
        return _flex(q, k, v, mask.block, gqa)
    if mask.path != "sdpa":
        raise ValueError("attend() needs a prepared mask: call AttentionMask.prepare(path) first")
    if dropout_p > 0:
        return _sdpa_with_dropout(q, k, v, mask.dense, dropout_p, gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=gqa)


@torch.compiler.disable
def _sdpa_with_dropout(q, k, v, dense, dropout_p: float, gqa: bool):
    """SDPA with its dropout drawn on the tracker's per-TP-rank stream. Swapping generator states is
    not traceable, so a compiled layer breaks its graph here (one clean break instead of dynamo's
    three inside the context manager) and this runs eagerly, drawing exactly eager's masks."""
    with get_rng_tracker().fork():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=dense, dropout_p=dropout_p, enable_gqa=gqa)

"""GLM's own parameter layout (THUDM/GLM and its Hugging Face port) against this project's.

What a key rename does not cover:

* **Fused QKV.** GLM's ``attention.query_key_value`` is ``[Q; K; V]`` (``3h`` rows, each block
  head-major); ours (``attention.qkv``) is ``[head, q|k|v, head_dim]`` so that a contiguous TP
  split gives each rank whole heads (docs/design.md, "The model"). The bias follows the
  weight.
* **Vocabulary rows.** GLM pads the word embedding to a multiple of 128 (50304 rows for the
  GPT-2 BPE models, whose real vocabulary, command tokens included, is 50265 ids). We keep exactly
  ``vocab_size`` rows in memory and pad per run (128·TP); exports pad back to a multiple of 128
  with zero rows.
* **Position tables** have ``max_sequence_length + 1`` rows in both.

Everything here works on whole (unsplit) state dicts; model-parallel shards are merged before
(:mod:`.glm_source`).
"""
from __future__ import annotations

import re
from typing import Dict, Optional

import torch

from ..config import ModelConfig
from .errors import ConvertError

GLM_VOCAB_MULTIPLE = 128

_TOP = {
    "word_embeddings.weight": "word_embeddings.weight",
    "transformer.position_embeddings.weight": "position_embeddings.weight",
    "transformer.block_position_embeddings.weight": "block_position_embeddings.weight",
    "transformer.final_layernorm.weight": "final_layernorm.weight",
    "transformer.final_layernorm.bias": "final_layernorm.bias",
}
_LAYER_PARTS = {
    "input_layernorm": "input_layernorm", "attention.query_key_value": "attention.qkv",
    "attention.dense": "attention.dense", "post_attention_layernorm": "post_attention_layernorm",
    "mlp.dense_h_to_4h": "mlp.dense_h_to_4h", "mlp.dense_4h_to_h": "mlp.dense_4h_to_h",
}
_GLM_LAYER_KEY = re.compile(r"transformer\.layers\.(\d+)\.(.+)\.(weight|bias)")
_OUR_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)\.(weight|bias)")


def glm_to_glmd_name(key: str) -> Optional[str]:
    """Our name for GLM's key, or None if GLM has no such parameter."""
    if key in _TOP:
        return _TOP[key]
    match = _GLM_LAYER_KEY.fullmatch(key)
    if match and match.group(2) in _LAYER_PARTS:
        return f"layers.{match.group(1)}.{_LAYER_PARTS[match.group(2)]}.{match.group(3)}"
    return None


def glmd_to_glm_name(name: str) -> str:
    inverse_top = {ours: theirs for theirs, ours in _TOP.items()}
    if name in inverse_top:
        return inverse_top[name]
    match = _OUR_LAYER_KEY.fullmatch(name)
    inverse_parts = {ours: theirs for theirs, ours in _LAYER_PARTS.items()}
    if not match or match.group(2) not in inverse_parts:
        raise KeyError(name)
    return f"transformer.layers.{match.group(1)}.{inverse_parts[match.group(2)]}.{match.group(3)}"


def qkv_glm_to_glmd(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[Q; K; V]`` rows → ``[head, q|k|v, head_dim]`` rows (weight ``[3h, h]`` or bias ``[3h]``)."""
    rest = tensor.shape[1:]
    head_dim = tensor.shape[0] // (3 * num_heads)
    return tensor.reshape(3, num_heads, head_dim, *rest).transpose(0, 1).reshape(tensor.shape).contiguous()


def qkv_glmd_to_glm(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Inverse of :func:`qkv_glm_to_glmd`."""
    rest = tensor.shape[1:]
    head_dim = tensor.shape[0] // (3 * num_heads)
    return tensor.reshape(num_heads, 3, head_dim, *rest).transpose(0, 1).reshape(tensor.shape).contiguous()


def glm_shape(state: Dict[str, torch.Tensor], where: str) -> Dict[str, int]:
    """The shape fields a GLM state dict determines (everything but the head count and vocabulary)."""
    for key in ("word_embeddings.weight", "transformer.position_embeddings.weight",
                "transformer.layers.0.mlp.dense_h_to_4h.weight"):
        if key not in state:
            raise ConvertError(where, f"no {key!r}: not a GLM state dict")
    layers = {int(m.group(1)) for m in map(_GLM_LAYER_KEY.fullmatch, state) if m}
    if layers != set(range(len(layers))):
        missing = min(set(range(max(layers) + 1)) - layers)
        raise ConvertError(where, f"no weights for transformer layer {missing}")
    hidden = state["word_embeddings.weight"].shape[1]
    ffn = state["transformer.layers.0.mlp.dense_h_to_4h.weight"].shape[0]
    return {"num_layers": len(layers), "hidden_size": hidden,
            "max_sequence_length": state["transformer.position_embeddings.weight"].shape[0] - 1,
            "ffn_hidden_size": None if ffn == 4 * hidden else ffn,
            "embedding_rows": state["word_embeddings.weight"].shape[0]}


def glm_to_glmd(state: Dict[str, torch.Tensor], config: ModelConfig, where: str) -> Dict[str, torch.Tensor]:
    """A whole GLM state dict (unprefixed keys) → ours under ``config``; errors name ``where`` and the key."""
    out = {}
    for key, value in state.items():
        name = glm_to_glmd_name(key)
        if name is None:
            raise ConvertError(where, f"unexpected key {key!r} (not a parameter of a GLM)")
        if name == "word_embeddings.weight":
            if value.shape[0] < config.vocab_size:
                raise ConvertError(where, f"{key} has {value.shape[0]} rows, fewer than the vocabulary's "
                                          f"{config.vocab_size} ids: a vocabulary of another model?")
            value = value[:config.vocab_size]
        elif name.endswith("attention.qkv.weight") or name.endswith("attention.qkv.bias"):
            value = qkv_glm_to_glmd(value, config.num_attention_heads)
        out[name] = value
    return out


def glmd_to_glm(state: Dict[str, torch.Tensor], config: ModelConfig) -> Dict[str, torch.Tensor]:
    """Ours → GLM's keys and layout, the embedding zero-padded to a multiple of 128 rows."""
    out = {}
    for name, value in state.items():
        if name == "word_embeddings.weight":
            rows = -(-config.vocab_size // GLM_VOCAB_MULTIPLE) * GLM_VOCAB_MULTIPLE
            padded = value.new_zeros((rows, value.shape[1]))
            padded[:config.vocab_size] = value
            value = padded
        elif name.endswith("attention.qkv.weight") or name.endswith("attention.qkv.bias"):
            value = qkv_glmd_to_glm(value, config.num_attention_heads)
        out[glmd_to_glm_name(name)] = value.contiguous()
    return out

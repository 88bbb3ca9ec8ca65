"""Hugging Face's Llama / Qwen2 / Mistral parameter layout against this project's decoder family.

Beyond key renames (``model.layers.{i}.self_attn.q_proj`` → ``layers.{i}.attention.query``, ...):

* **K and V** (``k_proj``, ``v_proj``, ``[kv_heads · head_dim, h]`` each) become one
  ``attention.key_value`` with rows ``[kv_head, k|v, head_dim]``; biases follow the weights.
* **Gate and up** (``gate_proj``, ``up_proj``, ``[ffn, h]`` each) become one ``mlp.gate_up`` with
  rows ``[ffn, gate|up]`` (interleaved per unit), so that a contiguous TP split keeps them paired.
* **Vocabulary rows**: Hugging Face stores exactly ``vocab_size`` rows, as this project does in
  memory. A tied model has no ``lm_head.weight`` (``save_pretrained`` drops it; one that is present
  must equal the embedding).

Everything here works on whole (unsplit) state dicts.
"""
from __future__ import annotations

import re
from typing import Dict

import torch

from ..config import ModelConfig
from .errors import ConvertError

_TOP = {"model.embed_tokens.weight": "word_embeddings.weight", "model.norm.weight": "final_norm.weight",
        "lm_head.weight": "lm_head"}
_LAYER = {"input_layernorm.weight": "input_norm.weight", "post_attention_layernorm.weight": "post_attention_norm.weight",
          "self_attn.q_proj.weight": "attention.query.weight", "self_attn.q_proj.bias": "attention.query.bias",
          "self_attn.o_proj.weight": "attention.dense.weight", "mlp.down_proj.weight": "mlp.down.weight"}
_PAIRS = {  # ours: (theirs first, theirs second, unit rows)
    "attention.key_value.weight": ("self_attn.k_proj.weight", "self_attn.v_proj.weight", "head_dim"),
    "attention.key_value.bias": ("self_attn.k_proj.bias", "self_attn.v_proj.bias", "head_dim"),
    "mlp.gate_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight", 1),
}
_HF_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")   # older exports kept the buffer


def _interleave(first: torch.Tensor, second: torch.Tensor, unit: int) -> torch.Tensor:
    """Rows ``[n, first|second, unit]`` from two ``[n · unit, ...]`` tensors."""
    rest = first.shape[1:]
    return torch.stack((first.reshape(-1, unit, *rest), second.reshape(-1, unit, *rest)), dim=1).reshape(
        2 * first.shape[0], *rest).contiguous()


def _deinterleave(fused: torch.Tensor, unit: int):
    rest = fused.shape[1:]
    pairs = fused.reshape(-1, 2, unit, *rest)
    return (pairs[:, 0].reshape(-1, *rest).contiguous(), pairs[:, 1].reshape(-1, *rest).contiguous())


def hf_to_glmd(state: Dict[str, torch.Tensor], config: ModelConfig, where: str) -> Dict[str, torch.Tensor]:
    """A whole Hugging Face decoder state dict → ours under ``config``; errors name ``where`` and the key."""
    out: Dict[str, torch.Tensor] = {}
    used = set()
    for key, value in state.items():
        if key in _TOP:
            out[_TOP[key]] = value
            used.add(key)
        elif _IGNORED.fullmatch(key):
            used.add(key)
        else:
            match = _HF_LAYER_KEY.fullmatch(key)
            if match and match.group(2) in _LAYER:
                out[f"layers.{match.group(1)}.{_LAYER[match.group(2)]}"] = value
                used.add(key)
    for layer in range(config.num_layers):
        for ours, (first, second, unit) in _PAIRS.items():
            keys = [f"model.layers.{layer}.{first}", f"model.layers.{layer}.{second}"]
            present = [k in state for k in keys]
            if not any(present):
                continue
            if not all(present):
                raise ConvertError(where, f"holds {keys[present.index(True)]!r} but not {keys[present.index(False)]!r}")
            rows = config.head_dim if unit == "head_dim" else unit
            out[f"layers.{layer}.{ours}"] = _interleave(state[keys[0]], state[keys[1]], rows)
            used.update(keys)
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise ConvertError(where, f"unexpected key {unexpected[0]!r} (not a parameter of a Llama/Qwen2/Mistral "
                                  f"model this project supports)")
    if config.tie_word_embeddings and "lm_head" in out:
        head = out.pop("lm_head")
        if not torch.equal(head, out.get("word_embeddings.weight", head)):
            raise ConvertError(where, "config.json ties the word embeddings, but lm_head.weight differs from "
                                      "model.embed_tokens.weight")
    return out


def glmd_to_hf(state: Dict[str, torch.Tensor], config: ModelConfig) -> Dict[str, torch.Tensor]:
    """Ours → Hugging Face's keys and layout (no ``lm_head.weight`` when tied, as save_pretrained writes)."""
    top = {ours: theirs for theirs, ours in _TOP.items()}
    layer = {ours: theirs for theirs, ours in _LAYER.items()}
    out = {}
    for name, value in state.items():
        if name in top:
            out[top[name]] = value.contiguous()
            continue
        index, part = name.split(".", 2)[1:]
        if part in layer:
            out[f"model.layers.{index}.{layer[part]}"] = value.contiguous()
        else:
            first, second, unit = _PAIRS[part]
            a, b = _deinterleave(value, config.head_dim if unit == "head_dim" else unit)
            out[f"model.layers.{index}.{first}"], out[f"model.layers.{index}.{second}"] = a, b
    return out

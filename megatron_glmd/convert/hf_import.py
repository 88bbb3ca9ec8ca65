"""Import a Hugging Face Llama / Qwen2 / Mistral checkpoint as a megatron-glmd checkpoint at any TP
and PP (``model.architecture: decoder``; docs/design.md, "The decoder family").

The source is a folder with ``config.json`` and ``model.safetensors`` or a sharded
``model.safetensors.index.json`` (``pytorch_model.bin`` is read weights-only too). Every model
field comes from ``config.json``, whose old (``rope_theta``, ``rope_scaling``) and new
(``rope_parameters``) spellings are both read. What this project's decoder does not compute is
refused by name rather than approximated: another architecture, biases on the attention output or
the MLP, an activation other than SiLU, a ``head_dim`` other than hidden / heads. A sliding
attention window (Mistral v0.1) bounds ``max_sequence_length``, within which full causal attention
is the same computation.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import torch

from ..config import ConfigError, ModelConfig, from_dict
from .errors import ConvertError
from .glm_import import DTYPE_NAMES, TORCH_DTYPES
from .glm_source import read_hub
from .glmd_checkpoint import check_state_dict, write_checkpoint
from .hf_layout import hf_to_glmd

HF_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"}
HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _rope(hub: Dict, where: str) -> Tuple[float, Optional[dict]]:
    params = dict(hub.get("rope_parameters") or {})
    theta = params.pop("rope_theta", hub.get("rope_theta", 10000.0))
    scaling = hub.get("rope_scaling") or params or None
    if scaling is not None:
        scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "default":
            scaling = None
        elif kind != "llama3":
            raise ConvertError(where, f"rope_scaling type {kind!r} is not supported (default, llama3)")
    return float(theta), scaling


def hf_model_config(hub: Dict, where: str, dtype: Optional[str] = None, tensor_dtype=None) -> ModelConfig:
    """The decoder ModelConfig of a Hugging Face ``config.json`` (``where`` names it in errors)."""
    archs = hub.get("architectures") or []
    if len(archs) != 1 or archs[0] not in HF_ARCHITECTURES:
        raise ConvertError(where, f"architectures {archs} is not one of {', '.join(HF_ARCHITECTURES)}: another "
                                  "model family (GLM checkpoints: tools/convert_glm_checkpoint.py)")
    family = HF_ARCHITECTURES[archs[0]]
    for flag in ("mlp_bias",) + (("attention_bias",) if family == "llama" else ()):
        if hub.get(flag):
            raise ConvertError(where, f"{flag}: true is not supported (only Q/K/V biases, as Qwen2 has)")
    if hub.get("hidden_act", "silu") != "silu":
        raise ConvertError(where, f"hidden_act {hub['hidden_act']!r} is not supported (silu)")
    try:
        hidden, heads = int(hub["hidden_size"]), int(hub["num_attention_heads"])
        if hub.get("head_dim") not in (None, hidden // heads):
            raise ConvertError(where, f"head_dim {hub['head_dim']} differs from hidden_size / num_attention_heads")
        theta, scaling = _rope(hub, where)
        length = int(hub.get("max_position_embeddings", 2048))
        window = hub.get("sliding_window") if family == "mistral" or hub.get("use_sliding_window") else None
        if window:
            length = min(length, int(window))
        if dtype is None:
            dtype = HF_DTYPES.get(str(hub.get("dtype") or hub.get("torch_dtype"))) or DTYPE_NAMES.get(tensor_dtype)
        values = dict(architecture="decoder", num_layers=int(hub["num_hidden_layers"]), hidden_size=hidden,
                      num_attention_heads=heads, num_key_value_heads=int(hub.get("num_key_value_heads") or heads),
                      ffn_hidden_size=int(hub["intermediate_size"]), vocab_size=int(hub["vocab_size"]),
                      max_sequence_length=length, rms_norm_eps=float(hub.get("rms_norm_eps", 1e-6)),
                      rope_theta=theta, rope_scaling=scaling, qkv_bias=family == "qwen2",
                      tie_word_embeddings=bool(hub.get("tie_word_embeddings", False)),
                      hidden_dropout=0.0, attention_dropout=float(hub.get("attention_dropout", 0.0)),
                      init_std=float(hub.get("initializer_range", 0.02)), dtype=dtype or "fp32")
    except KeyError as e:
        raise ConvertError(where, f"missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ConvertError(where, f"a field has the wrong type ({e})") from None
    try:
        return from_dict(values).validate()
    except ConfigError as e:
        raise ConvertError(where, str(e)) from None


def import_hf(path: str, dtype: Optional[str] = None):
    """``(ModelConfig, state dict in this project's names and layout, files read)`` of a HF checkpoint."""
    if not os.path.isdir(path):
        raise ConvertError(path, "is not a folder (a Hugging Face checkpoint: config.json and model.safetensors)")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ConvertError(config_path, "missing")
    source = read_hub(path)
    first = source.state.get("model.embed_tokens.weight")
    config = hf_model_config(source.hub_config, config_path, dtype, None if first is None else first.dtype)
    where = source.files[0] if source.shards == 1 else path
    state = hf_to_glmd(source.state, config, where)
    check_state_dict(config, state, where)
    target = TORCH_DTYPES[config.dtype]
    return config, {k: v.to(target) for k, v in state.items()}, source.files


def convert_hf_checkpoint(path: str, save_dir: str, tp: int = 1, pp: int = 1, dtype: Optional[str] = None) -> str:
    """Import ``path`` and write it to ``save_dir`` at TP=``tp``, PP=``pp``; returns the summary."""
    config, state, files = import_hf(path, dtype)
    write_checkpoint(save_dir, config, state, tp, pp)
    kv = config.num_key_value_heads
    return "\n".join([
        f"source: Hugging Face decoder, {len(files)} file{'s' if len(files) != 1 else ''} ({path})",
        f"model: {config.num_layers} layers, hidden {config.hidden_size}, {config.num_attention_heads} heads "
        f"({kv} KV heads, {'sharded' if kv % tp == 0 else 'replicated'} at TP={tp}), SwiGLU {config.ffn_size}, "
        f"rope_theta {config.rope_theta:g}{', llama3 scaling' if config.rope_scaling else ''}"
        f"{', QKV bias' if config.qkv_bias else ''}, {'tied' if config.tie_word_embeddings else 'untied'} head, "
        f"{config.dtype}",
        f"parameters: {sum(v.numel() for v in state.values()):,}",
        f"vocabulary: {config.vocab_size} ids, padded to {config.padded_vocab_size(tp)} rows at TP={tp}",
        f"wrote {save_dir} for TP={tp}, PP={pp} ({tp * pp} files)"])

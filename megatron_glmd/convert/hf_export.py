"""Write a decoder-family checkpoint in Hugging Face's layout: ``model.safetensors`` (or shards of
at most ``max_shard_bytes`` with ``model.safetensors.index.json``) and a ``config.json`` that
``transformers.AutoModelForCausalLM.from_pretrained`` and :mod:`.hf_import` read back exactly.

The architecture written is Qwen2 when the model has Q/K/V biases, Llama otherwise (a Mistral
checkpoint without a sliding window is the same computation), unless ``architecture`` names one.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import torch

from .errors import ConvertError
from .hf_import import HF_ARCHITECTURES
from .hf_layout import glmd_to_hf

HUB_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def decoder_hub_config(config, architecture: Optional[str] = None) -> dict:
    """``config.json`` of ``config`` (a decoder ModelConfig) for ``architecture`` (a HF class name)."""
    architecture = architecture or ("Qwen2ForCausalLM" if config.qkv_bias else "LlamaForCausalLM")
    family = HF_ARCHITECTURES.get(architecture)
    if family is None or (family == "qwen2") != bool(config.qkv_bias):
        raise ConvertError(architecture, f"cannot hold this model (qkv_bias={config.qkv_bias}); choose from "
                                         f"{', '.join(HF_ARCHITECTURES)}")
    hub = {"architectures": [architecture], "model_type": family, "num_hidden_layers": config.num_layers,
           "hidden_size": config.hidden_size, "intermediate_size": config.ffn_size,
           "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
           "head_dim": config.head_dim, "vocab_size": config.vocab_size,
           "max_position_embeddings": config.max_sequence_length, "rms_norm_eps": config.rms_norm_eps,
           "rope_theta": config.rope_theta, "rope_scaling": config.rope_scaling, "hidden_act": "silu",
           "tie_word_embeddings": config.tie_word_embeddings, "attention_dropout": config.attention_dropout,
           "initializer_range": config.init_std, "torch_dtype": HUB_DTYPES[config.dtype], "use_cache": True}
    if family == "llama":
        hub.update(attention_bias=False, mlp_bias=False)
    else:
        hub.update(sliding_window=None, use_sliding_window=False)
    return hub


def write_decoder_folder(folder: str, config, state: Dict[str, torch.Tensor], architecture: Optional[str] = None,
                         max_shard_bytes: Optional[int] = None) -> str:
    """Write the weights and config.json into the (new, empty) ``folder``; returns the files' names."""
    from safetensors.torch import save_file

    hub_state = glmd_to_hf(state, config)
    hub = decoder_hub_config(config, architecture)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hub, f, indent=2)
    if not max_shard_bytes:
        save_file(hub_state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return "model.safetensors, config.json"
    shards, size = [[]], 0
    for key in sorted(hub_state):
        nbytes = hub_state[key].numel() * hub_state[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: hub_state[k] for k in keys}, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
    total = sum(v.numel() * v.element_size() for v in hub_state.values())
    with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return f"{len(shards)} model-*-of-{len(shards):05d}.safetensors, model.safetensors.index.json, config.json"

"""Export a megatron-glmd checkpoint (a trained student, or any checkpoint) in its family's Hugging
Face layout: a decoder (``model.architecture: decoder``) as Llama/Qwen2 (:mod:`.hf_export`), a GLM
in GLM's hub layout as follows.

The output folder holds ``model.safetensors`` (GLM's keys, ``[Q; K; V]`` QKV, the embedding
zero-padded to a multiple of 128 rows as GLM pads it) and ``config.json`` (the hub port's GLM
fields, plus a ``megatron_glmd`` entry with the real vocabulary size and the GeLU variant, so that
:mod:`.glm_import` reads it back exactly); optionally also ``pytorch_model.bin``, the same state
dict for ``torch.load(weights_only=True)``. A compressed student's vocabulary-compression artifact
(``vocab_compression/``: the kept ids its rows stand for, the token map its inputs go through) is
copied beside the weights. The folder appears complete or not at all.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import torch

from ..atomic_io import atomic_directory
from .errors import ConvertError
from .glm_layout import glmd_to_glm
from .glmd_checkpoint import VOCAB_COMPRESSION_DIR, read_checkpoint

HUB_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def hub_config(config, rows: int) -> dict:
    """``config.json`` of the hub port's GLM for ``config`` (``rows``: the padded embedding rows)."""
    return {
        "architectures": ["GLMModel"], "model_type": "glm", "num_layers": config.num_layers,
        "hidden_size": config.hidden_size, "num_attention_heads": config.num_attention_heads, "vocab_size": rows,
        "max_sequence_length": config.max_sequence_length, "embedding_dropout_prob": config.hidden_dropout,
        "attention_dropout_prob": config.attention_dropout, "output_dropout_prob": config.hidden_dropout,
        "block_position_encoding": True, "relative_encoding": False, "output_predict": True,
        "parallel_output": True, "checkpoint_activations": False, "checkpoint_num_layers": 1,
        "attention_scale": 1.0, "spell_length": None, "spell_func": "lstm", "initializer_range": config.init_std,
        "torch_dtype": HUB_DTYPES[config.dtype],
        "megatron_glmd": {"vocab_size": config.vocab_size, "gelu": config.gelu,
                          "layernorm_epsilon": config.layernorm_epsilon},
    }


def _export_decoder(source: str, output: str, config, state, architecture: Optional[str],
                    max_shard_bytes: Optional[int]) -> str:
    from .hf_export import decoder_hub_config, write_decoder_folder

    decoder_hub_config(config, architecture)   # a bad --architecture fails before any output exists
    with atomic_directory(output) as tmp:
        files = write_decoder_folder(tmp, config, state, architecture, max_shard_bytes)
        artifact = os.path.join(source, VOCAB_COMPRESSION_DIR)
        if os.path.isdir(artifact):
            shutil.copytree(artifact, os.path.join(tmp, VOCAB_COMPRESSION_DIR))
            files += f", {VOCAB_COMPRESSION_DIR}/ (the student's compressed vocabulary: map input ids through it)"
    return (f"read {source}: decoder, {config.num_layers} layers, hidden {config.hidden_size}, "
            f"{sum(v.numel() for v in state.values()):,} parameters, vocabulary {config.vocab_size}, {config.dtype}\n"
            f"wrote {output}: {files}")


def export_checkpoint(source: str, output: str, tag: Optional[str] = None, torch_bin: bool = False,
                      architecture: Optional[str] = None, max_shard_bytes: Optional[int] = None) -> str:
    """Write ``source`` to the new folder ``output`` in its family's hub layout; returns a summary.
    ``architecture`` and ``max_shard_bytes`` apply to decoders (a HF class name; sharded safetensors)."""
    from safetensors.torch import save_file

    config, state = read_checkpoint(source, tag)
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise ConvertError(output, "already exists and is not empty; choose a new output directory")
    if config.is_decoder:
        if torch_bin:
            raise ConvertError(source, "--torch-bin is for GLM exports; a decoder is written as safetensors")
        return _export_decoder(source, output, config, state, architecture, max_shard_bytes)
    if architecture or max_shard_bytes:
        raise ConvertError(source, "is a GLM checkpoint: --architecture and --max-shard-size apply to decoders")
    if config.ffn_size != 4 * config.hidden_size:
        raise ConvertError(source, f"has ffn_hidden_size={config.ffn_size}; GLM's layout fixes it at 4 x hidden_size")
    if getattr(config, "embedding_size", None):
        raise ConvertError(source, f"has a factorised word embedding (embedding_size={config.embedding_size}), "
                                   "which GLM's layout has no place for")
    glm_state = glmd_to_glm(state, config)
    with atomic_directory(output) as tmp:
        save_file(glm_state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        if torch_bin:
            torch.save(glm_state, os.path.join(tmp, "pytorch_model.bin"))
        rows = glm_state["word_embeddings.weight"].shape[0]
        hub = hub_config(config, rows)
        artifact = os.path.join(source, VOCAB_COMPRESSION_DIR)
        if os.path.isdir(artifact):
            shutil.copytree(artifact, os.path.join(tmp, VOCAB_COMPRESSION_DIR))
            hub["megatron_glmd"]["vocab_compression"] = VOCAB_COMPRESSION_DIR
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hub, f, indent=2)
    files = "model.safetensors, config.json" + (", pytorch_model.bin" if torch_bin else "")
    if os.path.isdir(os.path.join(output, VOCAB_COMPRESSION_DIR)):
        files += f", {VOCAB_COMPRESSION_DIR}/ (the student's compressed vocabulary: map input ids through it)"
    return (f"read {source}: {config.num_layers} layers, hidden {config.hidden_size}, "
            f"{sum(v.numel() for v in state.values()):,} parameters, vocabulary {config.vocab_size} "
            f"(embedding padded to {rows} rows), GeLU {config.gelu}, {config.dtype}\n"
            f"wrote {output}: {files}")

"""Import a released GLM checkpoint as a megatron-glmd checkpoint at any TP and PP.

The model shape comes from the checkpoint's tensors (layers, hidden size, FFN width, positions),
the head count from ``--num-attention-heads``, the hub's ``config.json`` or a preset, and the
real vocabulary (command tokens included) from ``--vocab-size``, GLM's tokenizer files, the
``megatron_glmd`` entry of a ``config.json`` that :mod:`.export` wrote, or a preset: GLM pads its
embedding to a multiple of 128 rows, so the rows alone do not tell it. The
GeLU variant follows the source unless given: THUDM's training code (Megatron layout) uses the
tanh approximation, the hub port the exact erf form. Tensors keep their stored precision unless
``dtype`` asks for another.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from ..config import ConfigError, ModelConfig, PRESETS, from_dict
from .errors import ConvertError
from .glm_layout import GLM_VOCAB_MULTIPLE, glm_shape, glm_to_glmd
from .glm_source import GLMSource, read_glm_source
from .glmd_checkpoint import check_state_dict, write_checkpoint

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
SOURCE_NAMES = {"megatron": "THUDM Megatron layout", "hub": "Hugging Face hub layout"}


@dataclass
class ImportOptions:
    """What the checkpoint's tensors do not determine; None means "from the source or the preset"."""

    preset: Optional[str] = None
    num_attention_heads: Optional[int] = None
    vocab_size: Optional[int] = None
    tokenizer: Optional[str] = None           # GLM's tokenizer files: their vocabulary size is the model's
    gelu: Optional[str] = None
    dtype: Optional[str] = None


def _vocab_size(options: ImportOptions, source_config: Dict, preset: Dict, rows: int, where: str) -> int:
    if options.vocab_size is not None:
        size, origin = options.vocab_size, "--vocab-size"
    elif options.tokenizer is not None:
        from ..data.errors import DataError
        from ..data.tokenizer import load_tokenizer
        try:
            size, origin = load_tokenizer(options.tokenizer).vocab_size, options.tokenizer
        except DataError as e:
            raise ConvertError(options.tokenizer, str(e)) from None
    elif "vocab_size" in source_config:
        size, origin = source_config["vocab_size"], "config.json"
    elif "vocab_size" in preset:
        size, origin = preset["vocab_size"], f"preset {options.preset}"
    else:
        raise ConvertError(where, "the vocabulary size is unknown: give --tokenizer (GLM's vocabulary files), "
                                  "--vocab-size or --preset")
    if -(-size // GLM_VOCAB_MULTIPLE) * GLM_VOCAB_MULTIPLE != rows:
        raise ConvertError(options.tokenizer if origin == options.tokenizer else where,
                           f"a vocabulary of {size} ids ({origin}) pads to "
                           f"{-(-size // GLM_VOCAB_MULTIPLE) * GLM_VOCAB_MULTIPLE} rows, but the checkpoint's "
                           f"word embedding has {rows}: the vocabulary of another model?")
    return size


def glm_model_config(source: GLMSource, options: ImportOptions) -> ModelConfig:
    """The ModelConfig of the GLM in ``source`` (see the module docstring for where each field comes from)."""
    where = source.files[0]
    shape = glm_shape(source.state, where)
    preset: Dict = {}
    if options.preset is not None:
        if options.preset not in PRESETS:
            raise ConvertError(options.preset, f"unknown preset; choose from {', '.join(PRESETS)}")
        preset = PRESETS[options.preset]
        for name in ("num_layers", "hidden_size", "max_sequence_length"):
            if name in preset and preset[name] != shape[name]:
                raise ConvertError(where, f"checkpoint has {name}={shape[name]}, preset {options.preset} has "
                                          f"{preset[name]}: a checkpoint of another model?")
    ours = source.hub_config.get("megatron_glmd") or {}     # written by .export
    heads = options.num_attention_heads or source.hub_config.get("num_attention_heads") or preset.get(
        "num_attention_heads")
    if not heads:
        raise ConvertError(where, "the head count is unknown: give --num-attention-heads or --preset")
    first = source.state["word_embeddings.weight"]
    dtype = options.dtype or DTYPE_NAMES.get(first.dtype)
    if dtype is None:
        raise ConvertError(where, f"word_embeddings.weight is {first.dtype}; pass --dtype fp32|bf16|fp16")
    values = {key: shape[key] for key in ("num_layers", "hidden_size", "max_sequence_length", "ffn_hidden_size")}
    values.update(num_attention_heads=int(heads), dtype=dtype,
                  vocab_size=_vocab_size(options, ours, preset, shape["embedding_rows"], where),
                  gelu=options.gelu or ours.get("gelu") or ("tanh" if source.format == "megatron" else "erf"))
    if "layernorm_epsilon" in ours:
        values["layernorm_epsilon"] = ours["layernorm_epsilon"]
    for ours_name, hub_name in (("hidden_dropout", "output_dropout_prob"),
                                ("attention_dropout", "attention_dropout_prob"), ("init_std", "initializer_range")):
        if isinstance(source.hub_config.get(hub_name), (int, float)):
            values[ours_name] = float(source.hub_config[hub_name])
    try:
        return from_dict(values).validate()
    except ConfigError as e:
        raise ConvertError(where, str(e)) from None


def import_glm(path: str, options: Optional[ImportOptions] = None):
    """``(ModelConfig, state dict in this project's names and layout, GLMSource)`` of a GLM checkpoint."""
    options = options or ImportOptions()
    source = read_glm_source(path)
    config = glm_model_config(source, options)
    where = source.files[0] if source.shards == 1 else source.path
    state = glm_to_glmd(source.state, config, where)
    check_state_dict(config, state, where)
    target = TORCH_DTYPES[config.dtype]
    state = {k: v.to(target) for k, v in state.items()}
    return config, state, source


def describe(config: ModelConfig, source: Optional[GLMSource], state: Dict[str, torch.Tensor], tp: int, pp: int,
             save_dir: str) -> str:
    """The printed summary of a conversion."""
    lines = []
    if source is not None:
        lines.append(f"source: {SOURCE_NAMES[source.format]}, {source.shards} "
                     f"{'model-parallel shard' if source.format == 'megatron' else 'file'}"
                     f"{'s' if source.shards != 1 else ''} ({source.path})")
    lines += [
        f"model: {config.num_layers} layers, hidden {config.hidden_size}, {config.num_attention_heads} heads, "
        f"FFN {config.ffn_size}, {config.max_sequence_length} positions, GeLU {config.gelu}, {config.dtype}",
        f"parameters: {sum(v.numel() for v in state.values()):,}",
        f"vocabulary: {config.vocab_size} ids, padded to {config.padded_vocab_size(tp)} rows at TP={tp}",
        f"wrote {save_dir} for TP={tp}, PP={pp} ({tp * pp} files)",
    ]
    return "\n".join(lines)


def convert_glm_checkpoint(path: str, save_dir: str, tp: int = 1, pp: int = 1,
                           options: Optional[ImportOptions] = None) -> str:
    """Import ``path`` and write it to ``save_dir`` at TP=``tp``, PP=``pp``; returns the summary."""
    config, state, source = import_glm(path, options)
    write_checkpoint(save_dir, config, state, tp, pp)
    return describe(config, source, state, tp, pp, save_dir)

"""Typed, validated model configuration with the published GLM presets.

A YAML model file holds the fields of :class:`ModelConfig`, optionally on top of a preset::

    preset: glm-2b          # optional
    num_layers: 24          # overrides
    hidden_dropout: 0.0

Unknown keys, wrong types and violated constraints raise :class:`ConfigError` naming the
field (and the file), before any model is built.
"""
from __future__ import annotations

import dataclasses
import glob
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .base import ConfigError, dataclass_from_dict, read_yaml_mapping

PRECISIONS = ("fp32", "bf16", "fp16")   # of model weights and of a training run
GELU_VARIANTS = ("tanh", "erf")         # GLM's training code uses tanh; its Hugging Face port uses erf
ATTENTION_SETTINGS = ("auto", "flex", "sdpa")  # model.attention (megatron_glmd.model.attention)
COMPILE_SETTINGS = ("auto", "on", "off")       # model.compile; YAML true/false mean on/off


def pad_vocab_size(vocab_size: int, tp_size: int, multiple: int = 128) -> int:
    """Round ``vocab_size`` up to a multiple of ``multiple * tp_size`` (each shard a multiple of 128)."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if tp_size < 1:
        raise ValueError(f"tp_size must be positive, got {tp_size}")
    step = multiple * tp_size
    return -(-vocab_size // step) * step


@dataclass(frozen=True)
class ModelConfig:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    vocab_size: int                      # real vocabulary; padded per TP size by padded_vocab_size()
    max_sequence_length: int = 512
    ffn_hidden_size: Optional[int] = None  # default 4 * hidden_size
    embedding_size: Optional[int] = None   # E: factorised word embedding v×E then E×h ("+al"); None: v×h
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layernorm_epsilon: float = 1e-5
    init_std: float = 0.02
    checkpoint_activations: bool = False
    dtype: str = "fp32"
    gelu: str = "tanh"                   # GeLU variant, one of GELU_VARIANTS; an imported model keeps its source's
    attention: str = "auto"              # flex | sdpa | auto (flex on CUDA when no attention dropout is drawn)
    compile: str = "auto"                # torch.compile each transformer layer: on | off | auto (on for CUDA)

    @property
    def ffn_size(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def output_init_std(self) -> float:
        """Std of each block's output projections: init_std / sqrt(2 L) (GPT-2/GLM scaling)."""
        return self.init_std / math.sqrt(2.0 * self.num_layers)

    def padded_vocab_size(self, tp_size: int = 1) -> int:
        return pad_vocab_size(self.vocab_size, tp_size)

    def replace(self, **changes) -> "ModelConfig":
        return from_dict({**dataclasses.asdict(self), **changes})

    def validate(self, tp_size: int = 1, pp_size: int = 1) -> "ModelConfig":
        """Check the shape constraints for a (TP, PP) layout; raise ConfigError naming the field."""
        for name in ("num_layers", "hidden_size", "num_attention_heads", "vocab_size", "max_sequence_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ffn_hidden_size is not None and self.ffn_hidden_size <= 0:
            raise ConfigError(f"ffn_hidden_size must be positive, got {self.ffn_hidden_size}")
        if self.embedding_size is not None and self.embedding_size <= 0:
            raise ConfigError(f"embedding_size must be positive, got {self.embedding_size}")
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        for name in ("layernorm_epsilon", "init_std"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.gelu not in GELU_VARIANTS:
            raise ConfigError(f"gelu must be one of {', '.join(GELU_VARIANTS)}, got {self.gelu!r}")
        if self.attention not in ATTENTION_SETTINGS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTION_SETTINGS)}, got {self.attention!r}")
        if self.compile not in COMPILE_SETTINGS:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_SETTINGS)} (or true/false), "
                              f"got {self.compile!r}")
        if self.dtype not in PRECISIONS:
            raise ConfigError(f"dtype must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"num_attention_heads ({self.num_attention_heads}) must divide "
                              f"hidden_size ({self.hidden_size})")
        if tp_size < 1 or pp_size < 1:
            raise ConfigError(f"tensor/pipeline parallel sizes must be >= 1, got tp={tp_size}, pp={pp_size}")
        if self.num_attention_heads % tp_size:
            raise ConfigError(f"tensor-parallel size {tp_size} must divide num_attention_heads "
                              f"({self.num_attention_heads})")
        if self.hidden_size % tp_size:
            raise ConfigError(f"tensor-parallel size {tp_size} must divide hidden_size ({self.hidden_size})")
        if self.ffn_size % tp_size:
            raise ConfigError(f"tensor-parallel size {tp_size} must divide ffn_hidden_size ({self.ffn_size})")
        if pp_size > self.num_layers:
            raise ConfigError(f"pipeline-parallel size {pp_size} must be <= num_layers ({self.num_layers})")
        return self


def _read_presets() -> Dict[str, Dict[str, Any]]:
    """The shapes in ``presets/*.yaml`` (the one source of the published GLM shapes, docs/design.md)."""
    folder = os.path.join(os.path.dirname(__file__), "presets")
    return {os.path.basename(path)[:-len(".yaml")]: read_yaml_mapping(path, "preset")
            for path in sorted(glob.glob(os.path.join(folder, "*.yaml")))}


PRESETS: Dict[str, Dict[str, Any]] = _read_presets()


def from_dict(values: Dict[str, Any], *, where: str = "") -> ModelConfig:
    """Build a ModelConfig from a dict (optionally with ``preset``); reject unknown keys by name."""
    prefix = f"{where}: " if where else ""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}expected a mapping of model fields (or a preset), got {values!r}")
    values = dict(values)
    preset_name = values.pop("preset", None)
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise ConfigError(f"{prefix}unknown preset {preset_name!r}; choose from {', '.join(PRESETS)}")
        values = {**PRESETS[preset_name], **values}
    if isinstance(values.get("compile"), bool):      # YAML's `compile: true` / `false`
        values["compile"] = "on" if values["compile"] else "off"
    return dataclass_from_dict(ModelConfig, values, where=prefix)


def preset(name: str, **overrides) -> ModelConfig:
    return from_dict({"preset": name, **overrides})


def load_config(path: str) -> ModelConfig:
    """Load a model YAML file (see module docstring)."""
    return from_dict(read_yaml_mapping(path), where=path)

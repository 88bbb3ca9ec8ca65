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
import math
import os
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional

from .parallel.vocab import pad_vocab_size

DTYPES = ("fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or violates a constraint."""


@dataclass(frozen=True)
class ModelConfig:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    vocab_size: int                      # real vocabulary; padded per TP size by padded_vocab_size()
    max_sequence_length: int = 512
    ffn_hidden_size: Optional[int] = None  # default 4 * hidden_size
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layernorm_epsilon: float = 1e-5
    init_std: float = 0.02
    checkpoint_activations: bool = False
    dtype: str = "fp32"

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
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        for name in ("layernorm_epsilon", "init_std"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
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


# Published GLM shapes (DESIGN.md §2). vocab_size is the real vocabulary (BERT WordPiece 30522,
# GPT-2 BPE 50257); padding to a multiple of 128·TP gives 30592 / 50304 at TP=1.
PRESETS: Dict[str, Dict[str, Any]] = {
    "glm-base": dict(num_layers=12, hidden_size=768, num_attention_heads=12, vocab_size=30522,
                     max_sequence_length=512),
    "glm-large": dict(num_layers=24, hidden_size=1024, num_attention_heads=16, vocab_size=30522,
                      max_sequence_length=512),
    "glm-2b": dict(num_layers=36, hidden_size=2048, num_attention_heads=32, vocab_size=50257,
                   max_sequence_length=1024),
    "glm-10b": dict(num_layers=48, hidden_size=4096, num_attention_heads=64, vocab_size=50257,
                    max_sequence_length=1024),
    # Tiny shapes for tests and the CPU quickstart.
    "tiny-teacher": dict(num_layers=4, hidden_size=64, num_attention_heads=4, vocab_size=1000,
                         max_sequence_length=128),
    "tiny-student": dict(num_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=1000,
                         max_sequence_length=128),
}


def _check_type(name: str, value: Any, field_type: str, where: str) -> Any:
    optional = field_type.startswith("Optional[")
    expected = field_type[len("Optional["):-1] if optional else field_type
    if value is None and optional:
        return value
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "List[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    }
    if expected not in checks:
        raise TypeError(f"config field {name!r} has unsupported type {field_type}")
    if not checks[expected](value):
        raise ConfigError(f"{where}field {name!r} must be of type {expected}, got {value!r}")
    return float(value) if expected == "float" else value


def dataclass_from_dict(cls, values: Dict[str, Any], *, where: str = ""):
    """Build dataclass ``cls`` from a dict: unknown keys, missing keys and wrong types raise
    ConfigError naming the key (``where`` prefixes the message, e.g. the file and section)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}unknown config key {unknown[0]!r}; known keys: {', '.join(known)}")
    missing = [f.name for f in known.values() if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}missing required config key {missing[0]!r}")
    return cls(**{k: _check_type(k, v, str(known[k].type), where) for k, v in values.items()})


def from_dict(values: Dict[str, Any], *, where: str = "") -> ModelConfig:
    """Build a ModelConfig from a dict (optionally with ``preset``); reject unknown keys by name."""
    values = dict(values)
    prefix = f"{where}: " if where else ""
    preset_name = values.pop("preset", None)
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise ConfigError(f"{prefix}unknown preset {preset_name!r}; choose from {', '.join(PRESETS)}")
        values = {**PRESETS[preset_name], **values}
    return dataclass_from_dict(ModelConfig, values, where=prefix)


def preset(name: str, **overrides) -> ModelConfig:
    return from_dict({"preset": name, **overrides})


def read_yaml_mapping(path: str, what: str = "config") -> Dict[str, Any]:
    """The mapping at the top of a YAML file; ConfigError naming the file when it is missing or not one."""
    import yaml

    if not os.path.exists(path):
        raise ConfigError(f"{what} file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if values is None:  # an empty file: its missing keys are named by the caller
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values


def load_config(path: str) -> ModelConfig:
    """Load a model YAML file (see module docstring)."""
    return from_dict(read_yaml_mapping(path), where=path)

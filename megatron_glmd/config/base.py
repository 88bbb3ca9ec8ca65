"""The bottom of the configuration: its error type, dataclass building with named type errors, YAML.

Standard library and PyYAML only, so that reading a configuration never imports torch.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import fields
from typing import Any, Dict


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or violates a constraint."""


def _is_number_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _check_type(name: str, value: Any, field_type: str, where: str) -> Any:
    optional = field_type.startswith("Optional[")
    expected = field_type[len("Optional["):-1] if optional else field_type
    if value is None and optional:
        return value
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        # YAML 1.1 (PyYAML) reads 1e-3 -- no dot -- as a string: accept the number users mean.
        "float": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)) or _is_number_text(v),
        "bool": lambda v: isinstance(v, bool),
        "Union[bool, str]": lambda v: isinstance(v, (bool, str)),   # the section's validate() narrows the str
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


def read_yaml_mapping(path: str, what: str = "config") -> Dict[str, Any]:
    """The mapping at the top of a YAML file; ConfigError naming the file when it is missing or not one."""
    import yaml

    if not os.path.exists(path):
        raise ConfigError(f"{what} file {path} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: is a directory, not a YAML {what} file")
    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.safe_load(f)
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if values is None:  # an empty file: its missing keys are named by the caller
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values

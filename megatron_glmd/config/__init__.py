"""Configuration, the bottom of the import graph: model shapes and presets, run configuration, YAML.

Nothing here imports torch: a configuration is read and checked before any heavy module loads.
"""
from .base import ConfigError, dataclass_from_dict, read_yaml_mapping
from .model import PRECISIONS, PRESETS, ModelConfig, from_dict, load_config, pad_vocab_size, preset
from .run import (CheckpointConfig, DataConfig, DistillLossConfig, LoggingConfig, OptimizerConfig, ParallelConfig,
                  RunConfig, TrainConfig, apply_overrides, check_teacher_model, load_run_config,
                  run_config_from_dict)

__all__ = [
    "ConfigError", "dataclass_from_dict", "read_yaml_mapping", "PRECISIONS", "PRESETS", "ModelConfig", "from_dict",
    "load_config", "pad_vocab_size", "preset", "CheckpointConfig", "DataConfig", "DistillLossConfig",
    "LoggingConfig", "OptimizerConfig", "ParallelConfig", "RunConfig", "TrainConfig", "apply_overrides",
    "check_teacher_model", "load_run_config", "run_config_from_dict",
]

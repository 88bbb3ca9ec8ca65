"""megatron-glmd: tensor- and pipeline-parallel GLM distillation (GLMD)."""

__version__ = "0.1.0"

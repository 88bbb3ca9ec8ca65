"""Fused kernels of megatron-glmd, each with a PyTorch CPU path and a benchmark."""
from .softmax_kl import softmax_kl

__all__ = ["softmax_kl"]

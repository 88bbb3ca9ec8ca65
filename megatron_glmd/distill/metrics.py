"""Throughput and model-FLOPs-utilisation estimates for logging."""
from __future__ import annotations

import resource
from typing import Optional

import torch

from ..config import ModelConfig
from ..model.size import layer_parameter_count


def forward_flops_per_token(config: ModelConfig, seq_length: int) -> float:
    """Matmul FLOPs of one forward pass per token: layers, attention scores/values and the logits."""
    layers = 2.0 * config.num_layers * layer_parameter_count(config)
    attention = 4.0 * config.num_layers * seq_length * config.hidden_size
    logits = 2.0 * config.hidden_size * config.padded_vocab_size(1)
    return layers + attention + logits


def training_flops_per_token(student: ModelConfig, teacher: Optional[ModelConfig], seq_length: int,
                             recompute: bool) -> float:
    """Student forward + backward (2× forward) [+ recompute] and, when distilling, the teacher's forward."""
    student_passes = 4.0 if recompute else 3.0
    flops = student_passes * forward_flops_per_token(student, seq_length)
    if teacher is not None:
        flops += forward_flops_per_token(teacher, seq_length)
    return flops


def default_peak_tflops() -> Optional[float]:
    """Dense bf16 peak of the device for MFU: A100 312 TFLOP/s; unknown (None) on the CPU."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peak in (("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("V100", 125.0)):
        if key in name:
            return peak
    return None


def memory_gib() -> float:
    """Peak memory of this process: GPU allocator peak, or the CPU resident-set high-water mark."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux

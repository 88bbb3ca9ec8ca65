"""The machine's constants for the memory and time models: one dataclass, one CLI flag per field.

Defaults describe an A100-40GB node of 8 GPUs on NVLink 3 with one HDR InfiniBand adapter per
GPU (DGX A100 class). They are assumptions, not measurements: pass your cluster's figures
(``nccl-tests`` all_reduce_perf bus bandwidth inside and across nodes, a GEMM benchmark).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Hardware:
    gpu_name: str = "A100-40GB"
    gpu_memory_gib: float = 40.0       # per GPU; 0 skips the memory check
    reserve_gib: float = 4.0           # CUDA context, NCCL, DeepSpeed buckets, fragmentation
    peak_tflops: float = 312.0         # dense bf16 peak per GPU; 0 models no time (CPU processes)
    matmul_efficiency: float = 0.6     # sustained fraction of peak over a stage's compute
    nvlink_gbps: float = 240.0         # NCCL bus bandwidth inside a node, GB/s
    ib_gbps: float = 20.0              # NCCL bus bandwidth across nodes per GPU, GB/s
    comm_latency_us: float = 10.0      # fixed cost of each collective or point-to-point transfer
    launch_us: float = 8.0             # host time per kernel launch (PyTorch eager); 0: not modelled

    def check(self) -> "Hardware":
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "gpu_name" and value < 0:
                raise ValueError(f"--{f.name.replace('_', '-')} must be >= 0, got {value}")
        if self.peak_tflops > 0 and not (0 < self.matmul_efficiency <= 1 and self.nvlink_gbps > 0
                                         and self.ib_gbps > 0):
            raise ValueError("the time model needs 0 < --matmul-efficiency <= 1, --nvlink-gbps > 0 and "
                             "--ib-gbps > 0")
        return self


_HELP = {
    "gpu_name": "printed next to the memory verdict",
    "gpu_memory_gib": "memory per GPU in GiB; 0 skips the check",
    "reserve_gib": "GiB kept free for CUDA context, NCCL, DeepSpeed buckets, fragmentation",
    "peak_tflops": "dense bf16 peak per GPU in TFLOP/s (A100: 312); 0 models no time",
    "matmul_efficiency": "sustained fraction of the peak over a stage's compute, elementwise kernels included "
                         "(large A100 bf16 GEMMs reach ~0.75-0.85; small TP shards and the uncounted elementwise "
                         "work pull it lower)",
    "nvlink_gbps": "NCCL all-reduce bus bandwidth inside a node, GB/s (A100 NVLink 3: ~240)",
    "ib_gbps": "NCCL bus bandwidth across nodes per GPU, GB/s (one HDR 200 Gb/s adapter per GPU: ~20)",
    "comm_latency_us": "fixed cost of every collective and point-to-point transfer, microseconds",
    "launch_us": "host time per kernel launch in microseconds: Python, PyTorch's dispatcher and autograd, "
                 "cudaLaunchKernel (PyTorch eager on a server CPU: commonly ~5-10 us per op; an assumption, not "
                 "measured here: take it from a profile of your nodes); 0 leaves launches out",
}


def add_hardware_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hardware (time and memory model; defaults: A100-40GB nodes)")
    for f in fields(Hardware):
        group.add_argument(f"--{f.name.replace('_', '-')}", type=str if f.name == "gpu_name" else float,
                           default=f.default, help=f"{_HELP[f.name]} (default {f.default})")


def hardware_from_args(args: argparse.Namespace, cpu: bool = False) -> Hardware:
    """The flags' values; ``cpu`` (ranks are CPU processes) turns off the memory check and the time model."""
    values = {f.name: getattr(args, f.name) for f in fields(Hardware)}
    if cpu:
        values.update(gpu_memory_gib=0.0, peak_tflops=0.0)
    return Hardware(**values).check()

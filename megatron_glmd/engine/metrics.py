"""Run metrics and where they go: throughput, MFU, peak memory, whether a step's numbers are finite; the
console, progress bar and TensorBoard."""
from __future__ import annotations

import math
import resource
import sys
from typing import Callable, Dict, List, Optional

import torch


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


def throughput(iterations: int, seconds: float, tokens_per_iteration: int, seq_length: int, model_flops_per_token: float,
               hardware_flops_per_token: float, world_size: int, peak_tflops: Optional[float]) -> Dict[str, float]:
    """Tokens and samples per second, achieved model TFLOP/s per device, peak memory and, with a
    peak, MFU (model FLOPs: each pass once) and HFU (hardware FLOPs: with the recomputed forward)."""
    tokens_per_s = iterations * tokens_per_iteration / max(seconds, 1e-9)
    tflops = tokens_per_s * model_flops_per_token / world_size / 1e12
    out = {"tokens_per_s": tokens_per_s, "samples_per_s": tokens_per_s / seq_length,
           "tflops_per_device": tflops, "memory_gib": memory_gib()}
    if peak_tflops:
        out["mfu"] = tflops / peak_tflops
        out["hfu"] = tokens_per_s * hardware_flops_per_token / world_size / 1e12 / peak_tflops
    return out


class TrainingDiverged(RuntimeError):
    """A step's loss or gradient norm was not finite (more often than train.skip_nonfinite_steps allows)."""


def nonfinite_parts(record: Dict[str, float]) -> List[str]:
    """The names of a step record's loss parts and grad norm that are not finite (global values: the
    loss is aggregated over the pipeline and DP, the grad norm over the whole model, so every rank
    finds the same)."""
    keys = [k for k in record if k == "loss" or k.startswith("loss/")] + ["grad_norm"]
    return [f"{k} ({record[k]})" for k in keys if k in record and not math.isfinite(record[k])]


class RunLogger:
    """Where a run's records go, on global rank 0 only: the console (or above a progress bar) and
    TensorBoard. Records are flat ``{name: number}`` dicts with an ``iteration``."""

    def __init__(self, log: Callable[[str], None], is_rank0: bool, tensorboard_dir: Optional[str] = None):
        self.is_rank0 = is_rank0
        self.log = log if is_rank0 else (lambda *a, **k: None)
        self.bar = None
        self.tensorboard_dir = tensorboard_dir if is_rank0 else None
        self.writer = None
        self.resumed_at: Optional[int] = None

    def resume_at(self, iteration: int) -> None:
        """The run continues after ``iteration``: TensorBoard events of later iterations, written before
        a crash and run again now, are purged so that no iteration appears twice."""
        self.resumed_at = iteration

    def _tensorboard(self):
        if self.writer is None and self.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter
            purge = self.resumed_at + 1 if self.resumed_at is not None else None
            self.writer = SummaryWriter(self.tensorboard_dir, purge_step=purge)
        return self.writer

    def open_progress(self, total: int, initial: int, desc: str) -> None:
        """A progress bar on an interactive terminal (never in a batch job's log file)."""
        if self.is_rank0 and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True)

    def advance(self, record: Dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def record(self, record: Dict[str, float]) -> None:
        if not self.is_rank0:
            return
        text = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        (self.bar.write if self.bar is not None else self.log)(text)
        writer = self._tensorboard()
        if writer is not None:
            for k, v in record.items():
                if k != "iteration":
                    writer.add_scalar(k, v, record["iteration"])
            writer.flush()

"""The DeepSpeed configuration of a run: a pure function of the run configuration and its DP size.

Here, at the bottom, so that the engine (megatron_glmd.engine.deepspeed_setup) and the launch planner
(megatron_glmd.plan) use and print one and the same dictionary without importing each other.
"""
from __future__ import annotations

from .run import RunConfig


def deepspeed_config(cfg: RunConfig, dp: int) -> dict:
    """The DeepSpeed configuration of a run at data-parallel size ``dp`` (the launch planner prints it)."""
    t = cfg.train
    return {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.accumulation_steps(dp),
        "gradient_clipping": cfg.optimizer.clip_grad,
        "zero_optimization": {"stage": 1},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": t.precision == "bf16"},
        # Accumulate bf16 micro-batch gradients in fp32 (32 bf16 additions lose too many bits)...
        "data_types": {"grad_accum_dtype": "fp32" if t.precision == "bf16" else None},
        # ...and reduce them over DP in fp32 too: DeepSpeed's default is the model's dtype.
        "communication_data_type": "fp32",
        "fp16": {"enabled": t.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }

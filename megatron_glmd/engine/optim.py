"""Optimizer and learning-rate schedule of the paper's recipe (docs/design.md, "The two stages")."""
from __future__ import annotations

import math
from typing import Iterable, List

import torch
from torch import nn

from ..config import OptimizerConfig

try:  # apex is optional and not on PyPI
    from apex.optimizers import FusedAdam as _ApexFusedAdam
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _ApexFusedAdam = None


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> List[dict]:
    """Weight decay on matrices; none on biases, LayerNorm parameters (1-D tensors)."""
    decay, no_decay = [], []
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                (no_decay if param.dim() < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(groups: List[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """apex FusedAdam when importable on a GPU, torch AdamW otherwise (both decoupled weight decay)."""
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    if _ApexFusedAdam is not None and torch.cuda.is_available():
        return _ApexFusedAdam(groups, adam_w_mode=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def cosine_lr(iteration: int, cfg: OptimizerConfig, total_iters: int) -> float:
    """Learning rate after ``iteration`` optimizer steps: linear warm-up, then cosine (``decay_style:
    linear``: linear, as GLM's fine-tuning) to min_lr."""
    if cfg.warmup_iters and iteration < cfg.warmup_iters:
        return cfg.lr * (iteration + 1) / cfg.warmup_iters
    decay = cfg.decay_iters if cfg.decay_iters is not None else max(total_iters - cfg.warmup_iters, 1)
    progress = min((iteration - cfg.warmup_iters) / decay, 1.0)
    if cfg.decay_style == "linear":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1.0 - progress)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def build_scheduler(cfg: OptimizerConfig, total_iters: int):
    """A callable DeepSpeed turns into the scheduler of its wrapped optimizer."""
    def make(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: cosine_lr(it, cfg, total_iters) / cfg.lr)
    return make

"""The one place the engine, the checkpoint code and the tools build a pipeline stage: the model
family comes from ``config.architecture`` (docs/design.md, "The decoder family")."""
from __future__ import annotations

from typing import Optional, Tuple

import torch.distributed as dist

from ..config import ModelConfig
from .decoder import DecoderStage
from .glm import GLMStage

STAGE_CLASSES = {"glm": GLMStage, "decoder": DecoderStage}


def build_stage(config: ModelConfig, *, tp_group: Optional[dist.ProcessGroup] = None, pp_rank: int = 0,
                pp_size: int = 1, layer_range: Optional[Tuple[int, int]] = None, device=None):
    """A GLMStage or a DecoderStage for ``config`` (same keyword arguments as both)."""
    return STAGE_CLASSES[config.architecture](config, tp_group=tp_group, pp_rank=pp_rank, pp_size=pp_size,
                                              layer_range=layer_range, device=device)

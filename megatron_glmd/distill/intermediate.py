"""The paper's intermediate-layer ablation: MSE between mapped student and teacher hidden states.

Student layer k is paired with teacher layer ``(k + 1) * L_t // L_s - 1`` (uniform mapping, last
to last). When widths differ, a trainable linear map ``h_s → h_t`` (one per pair, TinyBERT-style)
projects the student's state. Per token, the loss is the mean over pairs of the mean squared
difference over hidden units, summed over valid tokens and divided by the global valid-token
count like L'_sp.

Pipeline parallelism: a pair's two hidden states live on the stage that holds both layers, so the
loss is computed there, not on the last stage. Its gradient enters the backward pass through
:class:`AddAuxiliaryGradient` on the stage's output (the way Megatron-Core injects MoE auxiliary
losses), scaled so that DeepSpeed's averaging over data-parallel ranks yields
``weight · Σ loss / global count``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..model.glm import GLMStage
from ..model.partition import StageLayers, uniform_layer_pairs
from ..parallel.layers import mark_parameter


def stage_pairs(student: ModelConfig, teacher: ModelConfig, layers: StageLayers) -> List[Tuple[int, int]]:
    """The pairs whose student layer is on this stage (``layers``); each must have its teacher layer here
    too (:func:`~megatron_glmd.model.partition.run_partition` keeps them together when it can)."""
    (s0, s1), (t0, t1) = layers.student, layers.teacher
    pairs = [(k, j) for k, j in uniform_layer_pairs(student.num_layers, teacher.num_layers) if s0 <= k < s1]
    for k, j in pairs:
        if not t0 <= j < t1:
            raise ConfigError(f"loss.intermediate_weight: student layer {k} and its teacher layer {j} are on "
                              "different pipeline stages; use a parallel.pp that keeps them together")
    return pairs


class AddAuxiliaryGradient(torch.autograd.Function):
    """Identity on ``x``; in backward, gives ``aux`` (a scalar) the gradient ``scale``."""

    @staticmethod
    def forward(ctx, x, aux, scale: float):
        ctx.save_for_backward(aux)
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        aux, = ctx.saved_tensors
        return grad, torch.full_like(aux, ctx.scale), None


class IntermediateLayerLoss(nn.Module):
    """Per-stage projections and hidden-state capture for the intermediate-layer MSE."""

    def __init__(self, student: GLMStage, teacher: GLMStage, pairs: List[Tuple[int, int]]):
        super().__init__()
        self.pairs = pairs
        hs, ht = student.config.hidden_size, teacher.config.hidden_size
        self.projections = nn.ModuleDict()
        if hs != ht:
            for k, _ in pairs:
                proj = nn.Linear(hs, ht, bias=False)
                mark_parameter(proj.weight, ("normal", student.config.init_std))
                self.projections[str(k)] = proj
        self._student_states: Dict[int, torch.Tensor] = {}
        self._teacher_states: Dict[int, torch.Tensor] = {}
        for k, j in pairs:
            student.layers[str(k)].register_forward_hook(self._capture(self._student_states, k))
            teacher.layers[str(j)].register_forward_hook(self._capture(self._teacher_states, j))

    @staticmethod
    def _capture(store, index):
        def hook(module, inputs, output):
            store[index] = output
        return hook

    def loss_sum(self, valid: torch.Tensor) -> torch.Tensor:
        """Σ over this stage's pairs and the valid tokens of the per-unit MSE (from the last forward).

        The engine divides by the total number of pairs (the student's depth) and the token count."""
        total = None
        for k, j in self.pairs:
            s = self._student_states.pop(k)
            t = self._teacher_states.pop(j).to(s.dtype)
            if str(k) in self.projections:
                s = self.projections[str(k)](s)
            per_token = (s.float() - t.float()).square().mean(-1)
            term = (per_token * valid).sum()
            total = term if total is None else total + term
        return total

"""The GLM model, built for one pipeline stage and one tensor-parallel rank."""
from .attention import AttentionMask, attend
from .attention_mask import glm_attention_mask, valid_token_mask
from .glm import GLMStage, stage_layer_range
from .op_count import LayerOps, count_layer_ops
from .transformer import GLMBlock

__all__ = ["AttentionMask", "GLMStage", "GLMBlock", "LayerOps", "attend", "count_layer_ops", "glm_attention_mask",
           "stage_layer_range", "valid_token_mask"]

"""The GLM model, built for one pipeline stage and one tensor-parallel rank."""
from .attention_mask import glm_attention_mask, valid_token_mask
from .glm import GLMStage, stage_layer_range
from .transformer import GLMBlock

__all__ = ["GLMStage", "GLMBlock", "glm_attention_mask", "stage_layer_range", "valid_token_mask"]

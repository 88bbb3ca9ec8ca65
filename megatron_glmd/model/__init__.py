"""The GLM model, built for one pipeline stage and one tensor-parallel rank."""
from .attention_mask import glm_attention_mask
from .glm import GLMStage, allreduce_tied_embedding_grads, stage_layer_range
from .transformer import GLMBlock

__all__ = ["GLMStage", "GLMBlock", "glm_attention_mask", "allreduce_tied_embedding_grads", "stage_layer_range"]

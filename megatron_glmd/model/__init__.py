"""The model families, built for one pipeline stage and one tensor-parallel rank, over shared layers:
GLM (glm.py, glm_layers.py) and the Llama/Qwen2/Mistral-style decoder (decoder.py,
decoder_layers.py, rope.py), both attending through one core (attention.py); ``build_stage`` picks a
family from ``config.architecture``."""
from .attention import AttentionMask, attend
from .attention_mask import glm_attention_mask, valid_token_mask
from .build import build_stage
from .common import stage_layer_range
from .decoder import DecoderStage
from .decoder_layers import DecoderBlock
from .glm import GLMStage
from .op_count import LayerOps, count_layer_ops
from .glm_layers import GLMBlock

__all__ = ["AttentionMask", "DecoderBlock", "DecoderStage", "GLMStage", "GLMBlock", "LayerOps", "attend",
           "build_stage", "count_layer_ops", "glm_attention_mask", "stage_layer_range", "valid_token_mask"]

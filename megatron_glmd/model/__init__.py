"""The model families, built for one pipeline stage and one tensor-parallel rank, over shared layers:
GLM (glm.py, transformer.py) and the Llama/Qwen2/Mistral-style decoder (decoder.py,
decoder_layers.py, rope.py); ``build_stage`` picks one from ``config.architecture``."""
from .attention_mask import causal_document_mask, glm_attention_mask, valid_token_mask
from .build import build_stage
from .common import stage_layer_range
from .decoder import DecoderStage
from .decoder_layers import DecoderBlock
from .glm import GLMStage
from .transformer import GLMBlock

__all__ = ["DecoderBlock", "DecoderStage", "GLMStage", "GLMBlock", "build_stage", "causal_document_mask",
           "glm_attention_mask", "stage_layer_range", "valid_token_mask"]

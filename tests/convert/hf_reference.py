"""Tiny random Hugging Face decoders (``transformers`` is the reference) and their logits."""
from __future__ import annotations

import torch

HIDDEN, HEADS, FFN, LAYERS, VOCAB, SEQ = 32, 4, 48, 2, 200, 16
LENGTHS = (16, 11, 7)                     # one full sample, two padded
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}

# name -> (class name, config fields): GQA replicated at TP 4 (and 2), llama3 scaling, Q/K/V bias, tied and untied.
MODELS = {
    "llama-gqa2-llama3-untied": ("Llama", dict(num_key_value_heads=2, rope_theta=500000.0, rope_scaling=LLAMA3,
                                               tie_word_embeddings=False, rms_norm_eps=1e-5)),
    "qwen2-gqa1-bias-tied": ("Qwen2", dict(num_key_value_heads=1, rope_theta=1e6, tie_word_embeddings=True)),
    "mistral-mha-untied": ("Mistral", dict(num_key_value_heads=4, sliding_window=None, tie_word_embeddings=False)),
}


def hf_model(name: str, seed: int):
    """A random ``*ForCausalLM`` in fp32 whose every parameter (norms, biases too) is drawn at a scale
    that makes each part of the computation visible in the logits."""
    import transformers

    family, fields = MODELS[name]
    config = getattr(transformers, f"{family}Config")(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=64, attention_dropout=0.0, **fields)
    model = getattr(transformers, f"{family}ForCausalLM")(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=g)
            param.copy_(1.0 + 0.1 * noise if "norm" in pname else (0.1 if param.dim() == 1 else 0.15) * noise)
    return model


def batch():
    """Token ids ``[3, SEQ]``, position ids (one document per sample), lengths, and HF's padding mask."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (len(LENGTHS), SEQ), generator=g)
    length = torch.tensor(LENGTHS)
    positions = torch.arange(SEQ).expand(len(LENGTHS), SEQ).clone()
    return ids, positions, length


def hf_logits(model, ids, length):
    mask = (torch.arange(ids.shape[1]).unsqueeze(0) < length.unsqueeze(1)).long()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits

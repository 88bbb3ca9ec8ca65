"""The decoder family beside GLM: documents packed into one sample never attend across their
boundary (each equals transformers' logits of that document alone), the FLOP formula equals
torch's FLOP counter on a built layer, and the config rejects the other family's fields by name."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from megatron_glmd.config import ConfigError, from_dict, preset
from megatron_glmd.convert.hf_layout import hf_to_glmd
from megatron_glmd.convert.hf_import import hf_model_config
from megatron_glmd.model import AttentionMask, DecoderStage, build_stage
from megatron_glmd.model.flops import layer_forward_flops
from tests.convert.hf_reference import VOCAB, hf_logits, hf_model

DECODER = dict(architecture="decoder", num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=48,
               vocab_size=100)


def _stage_from_hf(model, attention="auto"):
    config = hf_model_config({**model.config.to_dict(), "architectures": [type(model).__name__]}, "config.json")
    config = config.replace(attention=attention)
    stage = DecoderStage(config).eval()
    state = hf_to_glmd(dict(model.state_dict()), config, "state")
    padded = {k: torch.cat([v, v.new_zeros(stage.padded_vocab_size - v.shape[0], v.shape[1])])
              if k in ("word_embeddings.weight", "lm_head") else v for k, v in state.items()}
    stage.load_state_dict(padded)
    return stage


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
@pytest.mark.parametrize("name", ["llama-gqa2-llama3-untied", "qwen2-gqa1-bias-tied"])
def test_packed_documents_equal_each_document_alone(name, attention):
    """Through both paths of the attention core (a FlexAttention block mask with document ids, and
    SDPA with the materialised mask), grouped-query heads included."""
    model = hf_model(name, seed=3)
    stage = _stage_from_hf(model, attention)
    g = torch.Generator().manual_seed(5)
    docs = [torch.randint(0, VOCAB, (n,), generator=g) for n in (6, 4, 3)]
    ids = torch.cat(docs + [torch.zeros(3, dtype=torch.long)]).unsqueeze(0)       # 13 tokens + 3 padding
    positions = torch.cat([torch.arange(len(d)) for d in docs] + [torch.arange(3)]).unsqueeze(0)
    with torch.no_grad():
        got = stage(ids, positions, torch.tensor([13]))[0, :, :VOCAB]
    start = 0
    for doc in docs:
        alone = hf_logits(model, doc.unsqueeze(0), torch.tensor([len(doc)]))[0]
        torch.testing.assert_close(got[start:start + len(doc)], alone, rtol=1e-5, atol=1e-5)
        start += len(doc)


def _naive_attend(q, k, v, mask, dropout):
    """Attention as plain matmuls (which the FLOP counter sees; torch's fused CPU kernel it does not)."""
    k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    scores = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~mask.dense, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("kv,bias", [(4, False), (2, True), (1, False)])
def test_layer_flops_equal_the_flop_counter(kv, bias, monkeypatch):
    from megatron_glmd.model import decoder_layers
    monkeypatch.setattr(decoder_layers, "attend", _naive_attend)
    config = from_dict({**DECODER, "num_key_value_heads": kv, "qkv_bias": bias})
    layer = build_stage(config).eval().layers["0"]
    seq = 8
    x = torch.randn(1, seq, 32)
    cos, sin = torch.ones(1, 1, seq, 8), torch.zeros(1, 1, seq, 8)
    mask = AttentionMask.causal(torch.tensor([seq]), seq).prepare("sdpa")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x, mask, cos, sin)
    assert counter.get_total_flops() == seq * layer_forward_flops(config, seq)


@pytest.mark.parametrize("values,field", [
    ({**DECODER, "gelu": "erf"}, "gelu"),
    ({**DECODER, "layernorm_epsilon": 1e-5}, "layernorm_epsilon"),
    ({**DECODER, "embedding_size": 16}, "embedding_size"),
    ({"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "vocab_size": 100, "rope_theta": 1e4},
     "rope_theta"),
    ({"num_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "vocab_size": 100,
      "tie_word_embeddings": True}, "tie_word_embeddings"),
    ({**DECODER, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling"),
    ({**DECODER, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
    ({**DECODER, "num_key_value_heads": 3}, "num_key_value_heads"),
    ({**DECODER, "ffn_hidden_size": None}, "ffn_hidden_size"),
    ({**DECODER, "architecture": "gpt"}, "architecture"),
])
def test_a_field_of_the_other_family_or_a_bad_value_is_named(values, field):
    with pytest.raises(ConfigError, match=field) as error:
        from_dict(values, where="model.yaml").validate()
    assert "\n" not in str(error.value)


def test_kv_heads_split_or_replicate_over_tp():
    config = preset("llama-3-8b")
    assert [config.local_kv_heads(tp) for tp in (1, 2, 8, 16)] == [8, 4, 1, 1]
    config.validate(tp_size=16)
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        from_dict({**DECODER, "num_attention_heads": 6, "hidden_size": 48, "num_key_value_heads": 2}).validate(
            tp_size=3)
    assert preset("glm-2b").architecture == "glm" and preset("glm-2b").num_key_value_heads is None

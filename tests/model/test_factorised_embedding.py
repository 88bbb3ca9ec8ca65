"""``embedding_size`` E ("+al"): a V×E table then E→h, the tied output through the same factors.

Checked against a naive single-process computation, against an unfactorised GLM holding the
product matrix, across TP = 1, 2 and across a PP = 2 split whose tied copies sum their gradients.
"""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.config import ConfigError, from_dict
from megatron_glmd.model import GLMStage
from megatron_glmd.model.attention import AttentionMask
from megatron_glmd.parallel import ParallelGrid, gather_from_tp
from tests.distributed import run_distributed
from tests.model.helpers import full_gradients, glm_batch, tiny_config

SEED = 4321
E = 16


def factorised_config(**overrides):
    return tiny_config(embedding_size=E, **overrides)


def naive_logits(model: GLMStage, ids, position_ids, sep, length):
    """Every step written out on the full tensors: W_e[ids]·Pᵀ + positions, layers, LN, (·P)·W_eᵀ."""
    table, projection = model.word_embeddings.weight, model.embedding_projection.weight   # [V, E], [h, E]
    hidden = table[ids] @ projection.t() + model.position_embeddings.weight[position_ids[:, 0]] \
        + model.block_position_embeddings.weight[position_ids[:, 1]]
    mask = AttentionMask.glm(sep, length, ids.shape[1]).prepare("sdpa")
    for layer in model.layers.values():
        hidden = layer(hidden, mask)
    hidden = model.final_layernorm(hidden)
    return (hidden @ projection) @ table.t()


def test_shapes_and_tied_parameters():
    config = factorised_config()
    model = GLMStage(config)
    v_pad, h = config.padded_vocab_size(), config.hidden_size
    assert model.word_embeddings.weight.shape == (v_pad, E) and model.embedding_projection.weight.shape == (h, E)
    assert model.embedding_projection.weight.tp_shard[0] is None                 # replicated over TP
    assert model.tied_embedding_parameters() == [model.word_embeddings.weight, model.embedding_projection.weight]
    plain = GLMStage(tiny_config())
    saved = v_pad * h - (v_pad * E + E * h)
    assert sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in model.parameters()) == saved
    assert plain.tied_embedding_parameters() == [plain.word_embeddings.weight]
    middle = GLMStage(config, pp_rank=1, pp_size=3)
    assert middle.tied_embedding_parameters() == [] and not hasattr(middle, "embedding_projection")


def test_config_field():
    assert from_dict({"preset": "tiny-student", "embedding_size": 8}).embedding_size == 8
    with pytest.raises(ConfigError, match="embedding_size must be positive, got 0"):
        tiny_config(embedding_size=0).validate()
    with pytest.raises(ConfigError, match="'embedding_size' must be of type int"):
        from_dict({"preset": "tiny-student", "embedding_size": "8"})


def test_factorised_model_equals_naive_and_the_product_matrix():
    config = factorised_config()
    model = GLMStage(config).init_weights(SEED).eval()
    batch = glm_batch(config.vocab_size)
    logits = model(*batch)
    torch.testing.assert_close(logits, naive_logits(model, *batch), rtol=1e-5, atol=1e-6)
    # An unfactorised GLM whose word embedding is the product W_e·Pᵀ computes the same logits.
    plain = GLMStage(tiny_config()).init_weights(SEED).eval()
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, param in plain.named_parameters():
            param.copy_(params["word_embeddings.weight"] @ params["embedding_projection.weight"].t()
                        if name == "word_embeddings.weight" else params[name])
    torch.testing.assert_close(plain(*batch), logits, rtol=1e-5, atol=1e-6)


def _forward_backward(rank, world_size, config_dict):
    grid = ParallelGrid.build(tp_size=world_size)
    config = from_dict(config_dict)
    model = GLMStage(config, tp_group=grid.tp_group).init_weights(SEED)
    ids, position_ids, sep, length = glm_batch(config.vocab_size)
    logits = gather_from_tp(model(ids, position_ids, sep, length), grid.tp_group)[..., :config.vocab_size]
    targets = torch.randint(0, config.vocab_size, ids.shape, generator=torch.Generator().manual_seed(7))
    F.cross_entropy(logits.reshape(-1, config.vocab_size), targets.reshape(-1)).backward()
    return logits.detach(), full_gradients(model, grid.tp_group)


def test_tp2_equals_tp1():
    config = dataclasses.asdict(factorised_config())
    ref_logits, ref_grads = _forward_backward(0, 1, config)
    for rank, (logits, grads) in enumerate(run_distributed(2, _forward_backward, config)):
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
        assert grads.keys() == ref_grads.keys() and "embedding_projection.weight" in grads
        for name, grad in grads.items():
            ref = ref_grads[name]
            if name == "word_embeddings.weight":   # padded rows differ in count across TP sizes
                grad, ref = grad[:config["vocab_size"]], ref[:config["vocab_size"]]
            torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6, msg=f"rank {rank}: grad of {name}")


def test_pp2_split_with_tied_copies_equals_unsplit():
    config = factorised_config(num_layers=3)
    batch = glm_batch(config.vocab_size)
    targets = torch.randint(0, config.vocab_size, batch[0].shape, generator=torch.Generator().manual_seed(3))

    def loss(logits):
        return F.cross_entropy(logits[..., :config.vocab_size].reshape(-1, config.vocab_size), targets.reshape(-1))

    whole = GLMStage(config).init_weights(SEED)
    ref = whole(*batch)
    loss(ref).backward()
    first, last = (GLMStage(config, pp_rank=k, pp_size=2).init_weights(SEED) for k in range(2))
    out = last(first(*batch), *batch[1:])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    loss(out).backward()
    for a, b in zip(first.tied_embedding_parameters(), last.tied_embedding_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)           # the copies start identical
    ref_grads = dict(whole.named_parameters())
    for name, param in first.named_parameters():
        if name in dict(last.named_parameters()):
            grad = param.grad + dict(last.named_parameters())[name].grad   # what the embedding group sums
            torch.testing.assert_close(grad, ref_grads[name].grad, rtol=1e-6, atol=1e-7, msg=name)

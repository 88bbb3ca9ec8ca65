"""Cutting the GLM into pipeline stages and running them in sequence reproduces the unsplit model."""
import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.model import GLMStage, stage_layer_range
from tests.model.helpers import glm_batch, tiny_config

SEED = 99


def _loss(logits, vocab):
    targets = torch.randint(0, vocab, logits.shape[:-1], generator=torch.Generator().manual_seed(3))
    return F.cross_entropy(logits[..., :vocab].reshape(-1, vocab), targets.reshape(-1))


@pytest.mark.parametrize("pp", [2, 3])
def test_stages_in_sequence_equal_unsplit_model(pp):
    config = tiny_config(num_layers=5)
    ids, position_ids, sep, length = glm_batch(config.vocab_size)
    whole = GLMStage(config).init_weights(SEED)
    ref_logits = whole(ids, position_ids, sep, length)
    _loss(ref_logits, config.vocab_size).backward()

    stages = [GLMStage(config, pp_rank=k, pp_size=pp).init_weights(SEED) for k in range(pp)]
    hidden = ids
    for stage in stages:
        hidden = stage(hidden, position_ids, sep, length)
    torch.testing.assert_close(hidden, ref_logits, rtol=0, atol=0)
    _loss(hidden, config.vocab_size).backward()

    ref_grads = {name: p.grad for name, p in whole.named_parameters()}
    seen = {}
    for stage in stages:
        for name, param in stage.named_parameters():
            seen[name] = seen[name] + param.grad if name in seen else param.grad  # tied copies add up
            if name != "word_embeddings.weight":
                torch.testing.assert_close(param, dict(whole.named_parameters())[name], rtol=0, atol=0)
    assert seen.keys() == ref_grads.keys()
    for name, grad in seen.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    # The last stage's copy of the tied embedding starts identical to the first stage's.
    torch.testing.assert_close(stages[0].word_embeddings.weight, stages[-1].word_embeddings.weight, rtol=0, atol=0)


def test_stage_layer_ranges_cover_all_layers_in_order():
    for layers in (1, 5, 7, 48):
        for pp in range(1, min(layers, 6) + 1):
            ranges = [stage_layer_range(layers, pp, k) for k in range(pp)]
            assert ranges[0][0] == 0 and ranges[-1][1] == layers
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [e - s for s, e in ranges]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_stage_only_owns_its_parts():
    config = tiny_config(num_layers=4)
    first, middle, last = (GLMStage(config, pp_rank=k, pp_size=3) for k in range(3))
    assert hasattr(first, "position_embeddings") and not hasattr(first, "final_layernorm")
    assert not hasattr(middle, "word_embeddings") and not hasattr(middle, "position_embeddings")
    assert hasattr(last, "final_layernorm") and hasattr(last, "word_embeddings")
    assert list(first.layers) == ["0", "1"] and list(middle.layers) == ["2"] and list(last.layers) == ["3"]

"""The attention core: one mask predicate for GLM and decoders, flex equal to SDPA, the dropout rule.

References: the GLM mask against the independent formula of ``glm_attention_mask``; the document
mask against a per-element loop; both kernels against softmax attention written out in fp64.
Tolerances: fp32 attention over s <= 24 keys sums at most 24 probability-weighted values of
magnitude < 1, so two summation orders differ by a few ulps of 1 (1.2e-7 each; measured <= 1.2e-7
for the kernels and <= 2.4e-7 for whole stages here); 1e-6 is the issue's bound.
"""
import dataclasses

import pytest
import torch

from megatron_glmd.config import ConfigError, from_dict
from megatron_glmd.model import GLMStage, glm_attention_mask
from megatron_glmd.model.attention import AttentionMask, attend, attention_path, describe_attention, document_ids
from megatron_glmd.parallel import ParallelGrid, gather_from_tp, model_parallel_seed
from tests.distributed import run_distributed
from tests.model.helpers import glm_batch, tiny_config

SEED = 31


def _naive(q, k, v, allowed):
    """softmax(q kᵀ / sqrt(d) masked) v in fp64, the keys a query may not see set to -inf."""
    q, k, v = (t.double() for t in (q, k, v))
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


def _qkv(b, heads, s, d, kv_heads=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(b, heads, s, d, generator=g, dtype=dtype)
    k, v = (torch.randn(b, kv_heads or heads, s, d, generator=g, dtype=dtype) for _ in range(2))
    return q, k, v / 4      # outputs of magnitude < 1: an fp32 ulp of 6e-8 to 1.2e-7


def test_glm_mask_equals_the_blank_infilling_formula():
    _, _, sep, length = glm_batch(1000, batch=4, seq=19)
    dense = AttentionMask.glm(sep, length, 19).materialise()
    assert torch.equal(dense, glm_attention_mask(sep, length, 19))


def test_document_mask_is_causal_within_each_document():
    s, eod = 11, 9
    tokens = torch.tensor([[5, 6, eod, 7, eod, 1, 2, 3, eod, 4, 4], [1, 1, 1, 1, 1, eod, 2, 2, 2, eod, 0]])
    document = document_ids(tokens, eod)
    assert document.tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3], [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2]]
    length = torch.tensor([11, 8])
    dense = AttentionMask.causal(length, s, document).materialise()
    for b in range(2):
        for i in range(s):
            for j in range(s):
                want = (j <= i and j < length[b] and document[b, i] == document[b, j]) or i == j
                assert bool(dense[b, 0, i, j]) == want, (b, i, j)


@pytest.mark.parametrize("kind", ["glm", "documents", "gqa"])
def test_flex_equals_sdpa_and_the_fp64_formula(kind):
    b, heads, s, d = 3, 4, 21, 8
    _, _, sep, length = glm_batch(1000, batch=b, seq=s)
    kv_heads = 2 if kind == "gqa" else None
    if kind == "documents":
        document = torch.tensor([[0] * 7 + [1] * 14, [0] * 20 + [1], [0] * 3 + [1] * 3 + [2] * 15])
        mask = lambda: AttentionMask.causal(length, s, document)   # noqa: E731
    else:
        mask = lambda: AttentionMask.glm(sep, length, s)           # noqa: E731
    q, k, v = _qkv(b, heads, s, d, kv_heads)
    with torch.no_grad():    # torch 2.13's flex has no CPU backward (the CPU trains through SDPA)
        flex, sdpa = (attend(q, k, v, mask().prepare(path)) for path in ("flex", "sdpa"))
    reference = _naive(q, k, v, mask().materialise())
    torch.testing.assert_close(sdpa.double(), reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(flex.double(), reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(flex, sdpa, rtol=0, atol=1e-6)


def test_the_dropout_rule_and_its_log_line():
    assert attention_path("auto", dropout_active=False, device_type="cuda") == "flex"
    assert attention_path("auto", dropout_active=False, device_type="cpu") == "sdpa"
    assert attention_path("flex", dropout_active=False, device_type="cpu") == "flex"
    assert attention_path("flex", dropout_active=True, device_type="cuda") == "sdpa"
    assert attention_path("flex", dropout_active=False, device_type="cpu", needs_grad=True) == "sdpa"
    assert attention_path("flex", dropout_active=False, device_type="cuda", needs_grad=True) == "flex"
    assert attention_path("sdpa", dropout_active=False, device_type="cuda") == "sdpa"
    assert describe_attention("auto", 0.1, "cuda") == ("attention auto on cuda: training sdpa "
                                                       "(attention_dropout 0.1: flex has no dropout), evaluation flex")
    assert describe_attention("flex", 0.0, "cpu") == ("attention flex on cpu: training sdpa "
                                                      "(flex has no CPU backward), evaluation flex")
    q, k, v = _qkv(1, 2, 5, 4)
    with pytest.raises(ValueError, match="no dropout"):
        attend(q, k, v, AttentionMask.glm(torch.tensor([2]), torch.tensor([5]), 5).prepare("flex"), 0.1)
    with pytest.raises(ConfigError, match="attention must be one of"):
        tiny_config(attention="fused").validate()


def _stage_outputs(config, train: bool, recompute: bool = False):
    model_parallel_seed(SEED)
    model = GLMStage(config.replace(checkpoint_activations=recompute)).init_weights(SEED).train(train)
    ids, position_ids, sep, length = glm_batch(config.vocab_size)
    logits = model(ids, position_ids, sep, length)
    logits.float().pow(2).mean().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_stage_takes_flex_unless_it_draws_dropout_or_needs_a_cpu_backward():
    config = tiny_config(attention="flex", attention_dropout=0.1)
    stage = GLMStage(config)
    _, _, sep, length = glm_batch(config.vocab_size)
    prepare = lambda: stage.attention_mask(AttentionMask.glm(sep, length, 24)).path   # noqa: E731
    with torch.no_grad():
        assert stage.eval() and prepare() == "flex"       # the teacher
        assert stage.train() and prepare() == "sdpa"      # a student draws attention dropout
    stage = GLMStage(config.replace(attention_dropout=0.0)).train()
    assert prepare() == "sdpa"                            # a CPU backward
    with torch.no_grad():
        assert prepare() == "flex"
    # Training with dropout falls back to SDPA, whose masks recompute replays exactly.
    plain, plain_grads = _stage_outputs(config, train=True)
    again, again_grads = _stage_outputs(config, train=True, recompute=True)
    assert torch.equal(plain, again)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(again_grads[name], grad, rtol=0, atol=0, msg=name)


@torch.no_grad()
@pytest.mark.parametrize("train", [False, True])
def test_flex_stage_equals_sdpa_stage(train):
    ids, position_ids, sep, length = glm_batch(1000)
    logits = {}
    for attention in ("flex", "sdpa"):
        model = GLMStage(tiny_config(attention=attention)).init_weights(SEED).train(train)
        logits[attention] = model(ids, position_ids, sep, length)
    torch.testing.assert_close(logits["flex"], logits["sdpa"], rtol=0, atol=1e-6)


@torch.no_grad()
def test_flex_pipeline_stages_equal_the_unsplit_sdpa_model():
    config = tiny_config(num_layers=5, attention="flex")
    ids, position_ids, sep, length = glm_batch(config.vocab_size)
    whole = GLMStage(config.replace(attention="sdpa")).init_weights(SEED).eval()
    hidden = ids
    for k in range(2):
        hidden = GLMStage(config, pp_rank=k, pp_size=2).init_weights(SEED).eval()(hidden, position_ids, sep, length)
    torch.testing.assert_close(hidden, whole(ids, position_ids, sep, length), rtol=0, atol=1e-6)


def _tp_flex_and_sdpa(rank, world_size, config_dict):
    grid = ParallelGrid.build(tp_size=world_size)
    ids, position_ids, sep, length = glm_batch(config_dict["vocab_size"])
    out = {}
    for attention in ("flex", "sdpa"):
        model_parallel_seed(SEED, tp_rank=grid.tp_rank)
        config = from_dict({**config_dict, "attention": attention})
        model = GLMStage(config, tp_group=grid.tp_group).init_weights(SEED).eval()
        with torch.no_grad():
            out[attention] = gather_from_tp(model(ids, position_ids, sep, length), grid.tp_group)
    return out


def test_flex_equals_sdpa_at_tp2():
    for out in run_distributed(2, _tp_flex_and_sdpa, dataclasses.asdict(tiny_config())):
        torch.testing.assert_close(out["flex"], out["sdpa"], rtol=0, atol=1e-6)

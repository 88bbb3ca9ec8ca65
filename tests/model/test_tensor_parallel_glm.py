"""TP ∈ {1, 2, 4}: same logits and same gradients (re-assembled from shards) as TP = 1."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.config import from_dict
from megatron_glmd.model import GLMStage
from megatron_glmd.parallel import ParallelGrid, gather_from_tp, model_parallel_seed
from tests.distributed import run_distributed
from tests.model.helpers import full_gradients, glm_batch, tiny_config

SEED = 1234


def _forward_backward(rank, world_size, config_dict, train: bool):
    """Build the GLM at TP = world_size, run one forward/backward; return gathered logits and grads."""
    grid = ParallelGrid.build(tp_size=world_size)
    model_parallel_seed(SEED, tp_rank=grid.tp_rank)
    config = from_dict(config_dict)
    model = GLMStage(config, tp_group=grid.tp_group).init_weights(SEED)
    model.train(train)
    ids, position_ids, sep, length = glm_batch(config.vocab_size)
    logits = gather_from_tp(model(ids, position_ids, sep, length), grid.tp_group)[..., :config.vocab_size]
    targets = torch.randint(0, config.vocab_size, ids.shape, generator=torch.Generator().manual_seed(7))
    F.cross_entropy(logits.reshape(-1, config.vocab_size), targets.reshape(-1)).backward()
    return logits.detach(), full_gradients(model, grid.tp_group)


def _params(rank, world_size, config_dict):
    grid = ParallelGrid.build(tp_size=world_size)
    model = GLMStage(from_dict(config_dict), tp_group=grid.tp_group).init_weights(SEED)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def reference():
    config = tiny_config()
    return _forward_backward(0, 1, dataclasses.asdict(config), train=False)


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_matches_single_process_logits_and_grads(tp, reference):
    config = tiny_config()
    ref_logits, ref_grads = reference
    results = run_distributed(tp, _forward_backward, dataclasses.asdict(config), False)
    vocab = config.vocab_size
    for rank, (logits, grads) in enumerate(results):
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            ref = ref_grads[name]
            if name == "word_embeddings.weight":  # padded rows may differ in count across TP sizes
                grad, ref = grad[:vocab], ref[:vocab]
            torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6, msg=f"rank {rank}: grad of {name}")


def test_tp2_shards_are_slices_of_tp1_init():
    config = tiny_config()
    full = _params(0, 1, dataclasses.asdict(config))
    shards = run_distributed(2, _params, dataclasses.asdict(config))
    model = GLMStage(config)
    for name, param in model.named_parameters():
        dim = param.tp_shard[0]
        if dim is None:
            for rank in range(2):
                torch.testing.assert_close(shards[rank][name], full[name], rtol=0, atol=0)
        else:
            torch.testing.assert_close(torch.cat([shards[0][name], shards[1][name]], dim=dim), full[name],
                                       rtol=0, atol=0, msg=name)


def test_dropout_on_is_reproducible_run_to_run():
    config = tiny_config(hidden_dropout=0.1, attention_dropout=0.1)
    first = run_distributed(2, _forward_backward, dataclasses.asdict(config), True)
    second = run_distributed(2, _forward_backward, dataclasses.asdict(config), True)
    no_dropout = run_distributed(2, _forward_backward, dataclasses.asdict(tiny_config()), True)
    for rank in range(2):
        torch.testing.assert_close(first[rank][0], second[rank][0], rtol=0, atol=0)
        for name in first[rank][1]:
            torch.testing.assert_close(first[rank][1][name], second[rank][1][name], rtol=0, atol=0)
    # Dropout really is active: the outputs differ from a dropout-free run.
    assert not torch.allclose(first[0][0], no_dropout[0][0])
    # The dropout masks are consistent across TP ranks: both ranks computed the same full logits.
    torch.testing.assert_close(first[0][0], first[1][0], rtol=0, atol=0)

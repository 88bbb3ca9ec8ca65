"""Parameter counts from the config equal built models (glmd-model-info's output: tests/cli)."""
import pytest
import torch

from megatron_glmd.config import from_dict, preset
from megatron_glmd.model import GLMStage
from megatron_glmd.model.size import stage_parameter_count, total_parameter_count
from megatron_glmd.parallel import ParallelGrid
from tests.distributed import run_distributed
from tests.model.helpers import glm_batch, tiny_config


def _numel(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("pp", [1, 2, 3])
def test_stage_counts_match_built_stages(pp):
    config = tiny_config(num_layers=5, ffn_hidden_size=96)
    for k in range(pp):
        assert stage_parameter_count(config, 1, pp, k) == _numel(GLMStage(config, pp_rank=k, pp_size=pp))
    assert total_parameter_count(config) == _numel(GLMStage(config))


def test_stage_counts_with_a_factorised_embedding_match_built_stages():
    config = tiny_config(num_layers=4, embedding_size=16)
    for pp in (1, 2):
        for k in range(pp):
            assert stage_parameter_count(config, 1, pp, k) == _numel(GLMStage(config, pp_rank=k, pp_size=pp))


def test_stage_counts_follow_given_layer_ranges():
    """Uneven ranges (as the FLOP-balanced partition gives) are counted as built."""
    config = tiny_config(num_layers=5, ffn_hidden_size=96)
    for k, layers in enumerate([(0, 1), (1, 4), (4, 5)]):
        built = GLMStage(config, pp_rank=k, pp_size=3, layer_range=layers)
        assert stage_parameter_count(config, 1, 3, k, layers) == _numel(built)


def _tp_count(rank, world, config_dict):
    grid = ParallelGrid.build(tp_size=world)
    return _numel(GLMStage(from_dict(config_dict), tp_group=grid.tp_group))


def test_tp2_counts_match_built_shards():
    import dataclasses
    config = tiny_config(vocab_size=3000)
    counts = run_distributed(2, _tp_count, dataclasses.asdict(config))
    assert counts == [stage_parameter_count(config, 2, 1, 0)] * 2


@pytest.mark.parametrize("name,published", [("glm-10b", 9.9e9), ("glm-2b", 1.9e9)])
def test_presets_within_5_percent_of_published(name, published):
    assert abs(total_parameter_count(preset(name)) - published) / published < 0.05


@pytest.mark.parametrize("dtype,tol", [("bf16", 5e-2), ("fp16", 1e-2)])
def test_low_precision_forward_tracks_fp32(dtype, tol):
    config = tiny_config()
    ids, pos, sep, length = glm_batch(config.vocab_size)
    ref = GLMStage(config).init_weights(0).eval()(ids, pos, sep, length)
    low_model = GLMStage(config.replace(dtype=dtype)).init_weights(0).eval()
    assert all(p.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype] for p in low_model.parameters())
    low = low_model(ids, pos, sep, length)
    assert low.dtype == low_model.word_embeddings.weight.dtype
    torch.testing.assert_close(low.float(), ref, rtol=tol, atol=tol)

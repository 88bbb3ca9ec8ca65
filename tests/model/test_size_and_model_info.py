"""Parameter counts from the config equal built models; glmd-model-info prints the published sizes."""
import subprocess
import sys

import pytest
import torch

from megatron_glmd.cli.model_info import main as model_info
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


def _layer_params(h, f, t):
    """One layer on one TP rank, by hand: QKV and MLP-in split by rows (with biases), attention-out and
    MLP-out split by columns (biases replicated), four LayerNorm vectors."""
    return (3 * h // t * h + 3 * h // t) + (h * h // t + h) + (f // t * h + f // t) + (h * f // t + h) + 4 * h


def test_model_info_prints_every_stage_and_rank(capsys):
    assert model_info(["--preset", "glm-10b", "--tp", "8", "--pp", "2", "--dp", "2", "--seq-length", "512"]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 9,880,682,496 (9.88 B)" in out
    assert "layers balanced by FLOPs at seq 512, recompute off" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 8]
    assert [(int(r[0]), int(r[2])) for r in rows] == [(k, t) for k in range(2) for t in range(8)]
    # Balance by hand: a layer's forward is 24h² + 4sh = 411.0 M FLOP/token, the logits 2·h·V = 419.4 M
    # (V = 50257 padded to 51200 at TP=8): 1.02 layers. Stage 0 with 25 layers and stage 1 with
    # 23 + logits (max 25 layers) beats 24 / 24 + logits (max 25.02).
    h, f, v, positions = 4096, 16384, 51200, 1025
    layer = 24 * h * h + 4 * 512 * h
    assert 2 * h * v / layer == pytest.approx(1.02, abs=0.005)
    ranges = {0: (0, 24), 1: (25, 47)}
    embedding = v // 8 * h
    params = {0: 25 * _layer_params(h, f, 8) + embedding + 2 * positions * h,
              1: 23 * _layer_params(h, f, 8) + 2 * h + embedding}       # final LayerNorm, tied copy
    assert params[0] + params[1] - embedding == pytest.approx(9_880_682_496 / 8, rel=0.02)
    gib = 1024 ** 3
    for r in rows:
        k = int(r[0])
        n = params[k]
        assert tuple(int(x) for x in r[1].split("-")) == ranges[k]
        assert int(r[3].replace(",", "")) == n
        # bf16 weights, bf16 grads, fp32 master + Adam m, v sharded by ZeRO-1 over DP=2.
        expected = [2 * n / gib, 2 * n / gib, 12 * n / 2 / gib, (4 * n + 6 * n) / gib]
        assert [float(x) for x in r[4:8]] == pytest.approx(expected, abs=0.006)


def test_model_info_reports_bad_layout_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "megatron_glmd.cli.model_info", "--preset", "glm-2b", "--tp", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error: tensor-parallel size 3 must divide num_attention_heads (32)" in proc.stderr
    assert "Traceback" not in proc.stderr


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

"""Parameter counts from the config equal built models; glmd-model-info prints the published sizes."""
import subprocess
import sys

import pytest
import torch

from megatron_glmd.cli.model_info import main as model_info
from megatron_glmd.config import from_dict, preset
from megatron_glmd.model import GLMStage
from megatron_glmd.model.size import stage_parameter_count, total_parameter_count, training_memory
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


def test_model_info_prints_totals_and_per_rank_rows(capsys):
    assert model_info(["--preset", "glm-10b", "--tp", "8", "--pp", "2", "--dp", "2"]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 9,880,682,496 (9.88 B)" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]
    assert len(rows) == 16  # 2 stages x 8 TP ranks
    stages = training_memory(preset("glm-10b"), 8, 2, 2)
    # Each row's params equal the library estimate, and the stages together hold every layer once.
    assert int(rows[0][3].replace(",", "")) == stages[0].params
    # ZeRO-1 shards the 12 bytes/param of fp32 master + Adam by DP.
    assert stages[0].optimizer_bytes == stages[0].params * 12 // 2


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

"""glmd-model-info prints every stage and TP rank of a layout with hand-checked counts and memory."""
import subprocess
import sys

import pytest

from megatron_glmd.cli.model_info import main as model_info


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


# The parameter counts the model cards publish (meta-llama/Meta-Llama-3-8B: 8.03 B, Llama-3.2-1B:
# 1.24 B, Qwen/Qwen2.5-7B: 7.61 B, Qwen2.5-1.5B: 1.54 B); the exact integers are the sums of the
# released safetensors' tensor sizes.
@pytest.mark.parametrize("name,count", [("llama-3-8b", 8_030_261_248), ("llama-3.2-1b", 1_235_814_400),
                                        ("qwen2.5-7b", 7_615_616_512), ("qwen2.5-1.5b", 1_543_714_304)])
def test_decoder_presets_have_the_released_parameter_counts(capsys, name, count):
    assert model_info(["--preset", name, "--tp", "2", "--seq-length", "1024"]) == 0
    out = capsys.readouterr().out
    assert f"total parameters: {count:,}" in out and "decoder" in out
    # Stage rows at TP=2: each rank holds half of everything but the norms (replicated): hand-check llama-3-8b.
    if name == "llama-3-8b":
        h, f, v, kv, t = 4096, 14336, 128256, 8 * 128, 2
        layer = (h * h // t + 2 * kv // t * h + h * h // t + 3 * h * f // t) + 2 * h
        rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 8]
        assert int(rows[0][3].replace(",", "")) == 32 * layer + 2 * v // t * h + h

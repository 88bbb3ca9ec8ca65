"""Throughput figures against hand computation: MFU counts each pass once, HFU adds recompute."""
import pytest

from megatron_glmd.engine.metrics import throughput


def test_mfu_and_hfu_by_hand():
    # 2 iterations of 4096 tokens in 4 s = 2048 tokens/s over 8 devices; 3e9 model and 4e9 hardware FLOPs/token.
    out = throughput(2, 4.0, 4096, 512, 3e9, 4e9, 8, peak_tflops=1.0)
    assert out["tokens_per_s"] == pytest.approx(2048.0)
    assert out["samples_per_s"] == pytest.approx(4.0)
    assert out["tflops_per_device"] == pytest.approx(2048 * 3e9 / 8 / 1e12)
    assert out["mfu"] == pytest.approx(0.768) and out["hfu"] == pytest.approx(1.024)
    assert "mfu" not in throughput(2, 4.0, 4096, 512, 3e9, 4e9, 8, peak_tflops=None)

"""Resharding and export are exact: TP 1→2→4→1 and PP 1→2→1 reshards, export → import round trips
(safetensors and the plain torch file) give back the same tensors bit for bit."""
import json
import os

import torch

from megatron_glmd.convert import read_checkpoint, write_checkpoint
from megatron_glmd.convert.export import export_checkpoint
from megatron_glmd.convert.glm_import import ImportOptions, convert_glm_checkpoint
from megatron_glmd.convert.reshard import reshard_checkpoint
from tests.convert.test_glmd_checkpoint import CONFIG, random_state


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reshard_chain_is_bit_identical(tmp_path):
    state = random_state(seed=5)
    write_checkpoint(str(tmp_path / "a"), CONFIG, state, 1, 1)
    chain = [("b", 2, 1), ("c", 4, 1), ("d", 1, 1), ("e", 1, 2), ("f", 2, 2), ("g", 1, 1)]
    previous = "a"
    for name, tp, pp in chain:
        summary = reshard_checkpoint(str(tmp_path / previous), str(tmp_path / name), tp, pp)
        assert f"TP={tp}, PP={pp}" in summary
        config, back = read_checkpoint(str(tmp_path / name))
        assert config == CONFIG and same(back, state), (name, tp, pp)
        previous = name


def test_export_import_round_trip_is_bit_identical(tmp_path):
    for dtype in ("fp32", "fp16"):
        config = CONFIG.replace(dtype=dtype, gelu="erf")
        state = {k: v.to(torch.float16 if dtype == "fp16" else torch.float32) for k, v in random_state().items()}
        write_checkpoint(str(tmp_path / f"src-{dtype}"), config, state, 2, 2)
        summary = export_checkpoint(str(tmp_path / f"src-{dtype}"), str(tmp_path / f"hub-{dtype}"), torch_bin=True)
        assert "embedding padded to 384 rows" in summary
        hub = tmp_path / f"hub-{dtype}"
        assert sorted(os.listdir(hub)) == ["config.json", "model.safetensors", "pytorch_model.bin"]
        assert json.loads((hub / "config.json").read_text())["vocab_size"] == 384
        plain = torch.load(hub / "pytorch_model.bin", weights_only=True)
        assert plain["word_embeddings.weight"].shape == (384, CONFIG.hidden_size)
        for source in (str(hub), str(hub / "pytorch_model.bin")):   # safetensors first, then the torch file
            out = str(tmp_path / f"back-{dtype}-{os.path.basename(source)}")
            convert_glm_checkpoint(source, out, 4, 2, ImportOptions())
            back_config, back = read_checkpoint(out)
            assert back_config == config and same(back, state)

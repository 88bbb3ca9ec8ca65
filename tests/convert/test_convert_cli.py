"""The conversion tools as scripts: a summary on success; on bad input exactly one
`error: <file>: <problem>` line, exit status 1, no traceback, and no output folder left behind.
The happy path runs each tool as a whole ``python tools/...`` process; the bad inputs run the same
scripts as processes forked from tests/fork_server.py's server (torch and the project imported once)."""
import os
import subprocess
import sys

import pytest
import torch

from tests.convert.glm_reference import RunsCode, random_glm_state, write_hub, write_megatron
from tests.fork_server import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLM = ["--num-attention-heads", "4", "--vocab-size", "265"]


def tool(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def forked_tool(name, *args):
    return run_script(os.path.join(ROOT, "tools", name), *args, timeout=120)


def fails(done, path, message):
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: {path}: ") and message in lines[0], lines[0]


def test_convert_reshard_export_happy_path(tmp_path):
    write_megatron(str(tmp_path / "glm"), random_glm_state(rows=384), 2, dtype=torch.float16)
    done = tool("convert_glm_checkpoint.py", "--source", tmp_path / "glm", "--output", tmp_path / "tp2", "--tp", 2,
                *GLM)
    assert done.returncode == 0, done.stderr
    assert "source: THUDM Megatron layout, 2 model-parallel shards" in done.stdout and "fp16" in done.stdout
    done = tool("reshard_checkpoint.py", "--source", tmp_path / "tp2", "--output", tmp_path / "tp4", "--tp", 4,
                "--pp", 2)
    assert done.returncode == 0 and "wrote" in done.stdout and "TP=4, PP=2" in done.stdout, done.stderr
    done = tool("export_checkpoint.py", "--source", tmp_path / "tp4", "--output", tmp_path / "hub")
    assert done.returncode == 0 and "model.safetensors" in done.stdout, done.stderr
    done = tool("convert_glm_checkpoint.py", "--source", tmp_path / "hub", "--output", tmp_path / "back")
    assert done.returncode == 0 and "Hugging Face hub layout" in done.stdout and "GeLU tanh" in done.stdout


@pytest.fixture
def megatron4(tmp_path):
    return write_megatron(str(tmp_path / "glm"), random_glm_state(rows=384), 4)


def shard(folder, rank):
    return os.path.join(folder, "release", f"mp_rank_{rank:02d}_model_states.pt")


def convert(tmp_path, source, *extra):
    done = forked_tool("convert_glm_checkpoint.py", "--source", source, "--output", tmp_path / "out", *extra)
    assert not os.path.exists(tmp_path / "out")
    return done


def test_missing_shard(tmp_path, megatron4):
    os.remove(shard(megatron4, 3))       # the last one: only the shards' own mp_world_size tells
    fails(convert(tmp_path, megatron4, *GLM), shard(megatron4, 3), "missing: shard 3 of 4 (model-parallel size "
                                                                   "mp_world_size=4)")
    os.remove(shard(megatron4, 1))
    fails(convert(tmp_path, megatron4, *GLM), shard(megatron4, 1), "missing: shard 1 of 4")


def test_shard_of_another_model(tmp_path, megatron4):
    other = write_megatron(str(tmp_path / "other"), random_glm_state(rows=384, seed=9), 4)
    os.replace(shard(other, 2), shard(megatron4, 2))
    fails(convert(tmp_path, megatron4, *GLM), shard(megatron4, 2), "a shard of another checkpoint?")


def test_wrong_vocabulary(tmp_path, megatron4):
    fails(convert(tmp_path, megatron4, "--num-attention-heads", 4, "--vocab-size", 50265), shard(megatron4, 0),
          "a vocabulary of 50265 ids (--vocab-size) pads to 50304 rows, but the checkpoint's word embedding has 384")


def test_non_glm_state_dict_and_unexpected_key_and_shape(tmp_path):
    path = tmp_path / "bert" / "pytorch_model.bin"
    path.parent.mkdir()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 4)}, path)
    fails(convert(tmp_path, path.parent, *GLM), path, "no 'word_embeddings.weight': not a GLM state dict")
    state = random_glm_state(rows=384)
    write_hub(str(tmp_path / "extra"), {**state, "transformer.layers.0.attention.rotary.weight": torch.zeros(2)}, 4)
    fails(convert(tmp_path, tmp_path / "extra", *GLM), tmp_path / "extra" / "pytorch_model.bin",
          "unexpected key 'transformer.layers.0.attention.rotary.weight'")
    state["transformer.layers.1.mlp.dense_4h_to_h.weight"] = torch.zeros(32, 64)
    write_hub(str(tmp_path / "shape"), state, 4, fmt="safetensors")
    fails(convert(tmp_path, tmp_path / "shape", *GLM), tmp_path / "shape" / "model.safetensors",
          "layers.1.mlp.dense_4h_to_h.weight has shape (32, 64), expected (32, 128)")


def test_pickle_payload_never_runs(tmp_path, megatron4):
    marker = tmp_path / "code-ran"
    torch.save({"module": {"word_embeddings.weight": RunsCode(str(marker))}}, shard(megatron4, 3))
    fails(convert(tmp_path, megatron4, *GLM), shard(megatron4, 3), "not a weights-only torch file")
    assert not marker.exists()


def test_reshard_and_export_bad_input(tmp_path):
    fails(forked_tool("reshard_checkpoint.py", "--source", tmp_path, "--output", tmp_path / "o", "--tp", 2),
          tmp_path / "config.yaml", "missing: not a megatron-glmd checkpoint directory")
    fails(forked_tool("export_checkpoint.py", "--source", tmp_path / "nope", "--output", tmp_path / "o"),
          tmp_path / "nope" / "config.yaml", "missing")
    assert not os.path.exists(tmp_path / "o")

"""Export of a decoder checkpoint back to the Hugging Face layout: transformers'
AutoModelForCausalLM.from_pretrained reads it and gives the source model's logits; a sharded export
converts back to the same weights; bad input to the tools is one line (the failing calls run as
processes forked from tests/fork_server.py's server, the successful one as a whole process)."""
import json
import os
import subprocess
import sys

import torch

from megatron_glmd.convert.export import export_checkpoint
from megatron_glmd.convert.glmd_checkpoint import read_checkpoint
from megatron_glmd.convert.hf_import import convert_hf_checkpoint
from tests.convert.hf_reference import MODELS, batch, hf_logits, hf_model
from tests.fork_server import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_export_round_trip_through_from_pretrained(tmp_path):
    import transformers

    ids, _, length = batch()
    for seed, name in enumerate(MODELS):
        model = hf_model(name, seed)
        model.save_pretrained(str(tmp_path / name), safe_serialization=True)
        convert_hf_checkpoint(str(tmp_path / name), str(tmp_path / f"{name}-tp2-pp2"), 2, 2)
        shard = 30_000 if name.startswith("llama") else None
        summary = export_checkpoint(str(tmp_path / f"{name}-tp2-pp2"), str(tmp_path / f"{name}-out"),
                                    max_shard_bytes=shard)
        assert ("model.safetensors.index.json" in summary) == bool(shard), summary
        back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / f"{name}-out")).eval()
        assert type(back).__name__.startswith("Qwen2" if name.startswith("qwen2") else "Llama")
        reference, got = hf_logits(model, ids, length), hf_logits(back, ids, length)
        for b, n in enumerate(length.tolist()):
            # The same weights and formulas, Mistral read as Llama: equal up to fp32 reassociation.
            torch.testing.assert_close(got[b, :n], reference[b, :n], rtol=1e-6, atol=1e-6, msg=name)
        # ... and converted again: the same weights, bit for bit.
        convert_hf_checkpoint(str(tmp_path / f"{name}-out"), str(tmp_path / f"{name}-again"), 1, 1)
        (c1, s1), (c2, s2) = (read_checkpoint(str(tmp_path / d)) for d in (f"{name}-tp2-pp2", f"{name}-again"))
        assert c1 == c2 and s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def tool(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def forked_tool(name, *args):
    return run_script(os.path.join(ROOT, "tools", name), *args, timeout=120)


def fails(done, path, message, output):
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"error: {path}: ") and message in lines[0], lines[0]
    assert not os.path.exists(output)


def test_bad_input_is_one_line(tmp_path):
    source = tmp_path / "llama"
    hf_model("llama-gqa2-llama3-untied", 0).save_pretrained(str(source), safe_serialization=True,
                                                            max_shard_size="20KB")
    out = tmp_path / "out"
    done = tool("convert_hf_checkpoint.py", "--source", source, "--output", out, "--tp", 2, "--pp", 2)
    assert done.returncode == 0 and "KV heads, sharded at TP=2" in done.stdout, done.stderr
    out = tmp_path / "out2"
    done = forked_tool("convert_hf_checkpoint.py", "--source", source, "--output", out, "--tp", 3)
    fails(done, out, "tensor-parallel size 3 must divide num_attention_heads (4)", out)

    config_path = source / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}))
    fails(forked_tool("convert_hf_checkpoint.py", "--source", source, "--output", out), config_path,
          "rope_scaling type 'yarn' is not supported", out)
    config_path.write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    fails(forked_tool("convert_hf_checkpoint.py", "--source", source, "--output", out), config_path,
          "another model family", out)
    config_path.write_text(json.dumps(config))

    index = json.loads((source / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    os.remove(source / victim)
    fails(forked_tool("convert_hf_checkpoint.py", "--source", source, "--output", out), source / victim, "missing",
          out)

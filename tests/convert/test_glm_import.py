"""Released-GLM checkpoints (random weights in THUDM's Megatron layout at MP = 1, 2, 4 and in the hub
layout) convert and give the logits of the independent reference (tests/convert/glm_reference.py)
within 1e-5 in fp32, at TP 1, 2, 4 and PP 1, 2, on a blank-infilling batch with padding. The
converted weights are read by the engine's own teacher loader (load_stage_weights)."""
import os

import pytest
import torch

from megatron_glmd.convert.glm_import import ImportOptions, convert_glm_checkpoint
from megatron_glmd.convert.glmd_checkpoint import read_model_config
from megatron_glmd.checkpoint.checkpointing import load_stage_weights
from megatron_glmd.model import GLMStage
from tests.convert.glm_reference import (blank_infilling_batch, random_glm_state, reference_logits, write_hub,
                                         write_megatron)
from tests.convert.layouts import (LAYOUTS, at_every_tp, convert_at_every_layout, gather_vocabulary,
                                   tensor_parallel_group)

HEADS, VOCAB, ROWS, SEQ = 4, 265, 384, 24          # 257 BPE ids + 8 command tokens, padded to 128 as GLM does
SOP, CLS, MASK = 257, 259, 260
# name -> (writer, GeLU of the source, fp16 weights?)
SOURCES = {
    "megatron-mp1": (lambda d, s: write_megatron(d, s, 1), "tanh", False),
    "megatron-mp2-fp16": (lambda d, s: write_megatron(d, s, 2, dtype=torch.float16), "tanh", True),
    "megatron-mp4": (lambda d, s: write_megatron(d, s, 4, iteration="1000"), "tanh", False),
    "hub-bin": (lambda d, s: write_hub(d, s, HEADS, "bin"), "erf", False),
    "hub-bin-glm-sharded": (lambda d, s: write_hub(d, s, HEADS, "bin", prefix="glm.", shards=2), "erf", False),
    "hub-safetensors-sharded": (lambda d, s: write_hub(d, s, HEADS, "safetensors", shards=3), "erf", False),
    "hub-safetensors-glm": (lambda d, s: write_hub(d, s, HEADS, "safetensors", prefix="glm."), "erf", False),
}


def batch():
    """Three samples of different lengths (two padded), one, two and three spans."""
    return blank_infilling_batch([(12, [(3, 5)]), (9, [(1, 2), (5, 8)]), (8, [(1, 3), (4, 5), (6, 8)])], SEQ,
                                 MASK, SOP, CLS)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Every source written, converted at every layout; the reference logits of each source."""
    root = tmp_path_factory.mktemp("glm")
    ids, pos, sep, length = batch()
    out = {}
    for seed, (name, (write, gelu, half)) in enumerate(SOURCES.items()):
        state = random_glm_state(rows=ROWS, seed=seed)
        if half:
            state = {k: v.half().float() for k, v in state.items()}
        write(str(root / name), state)
        reference = reference_logits(state, HEADS, ids, pos, sep, gelu=gelu)[..., :VOCAB]
        options = ImportOptions(num_attention_heads=HEADS, vocab_size=VOCAB, dtype="fp32")
        out[name] = (reference, convert_at_every_layout(
            lambda src, dst, tp, pp: convert_glm_checkpoint(src, dst, tp, pp, options), str(root / name), root, name))
    return out


def project_logits(rank, world, save_dirs, batch_tensors):
    """Logits of each converted checkpoint: stages built per pipeline rank and chained, vocab gathered."""
    group = tensor_parallel_group(world)
    ids, pos, sep, length = batch_tensors
    results = {}
    for key, save_dir in save_dirs.items():
        config, _, pp = read_model_config(save_dir)
        hidden = ids
        for stage in range(pp):
            part = GLMStage(config, tp_group=group, pp_rank=stage, pp_size=pp).eval()
            load_stage_weights(part, save_dir, "student.", rank)
            with torch.no_grad():
                hidden = part(hidden, pos if stage == 0 else None, sep, length)
        results[key] = gather_vocabulary(hidden, world, group)[..., :config.vocab_size]
    return results


@pytest.fixture(scope="module")
def logits(converted):
    return at_every_tp(project_logits, converted, batch())


@pytest.mark.parametrize("tp,pp", LAYOUTS)
@pytest.mark.parametrize("source", SOURCES)
def test_converted_logits_equal_reference(converted, logits, source, tp, pp):
    reference = converted[source][0]
    got = logits[source, tp, pp]
    _, _, _, length = batch()
    for b, n in enumerate(length.tolist()):       # padding positions are masked differently and unused
        torch.testing.assert_close(got[b, :n].double(), reference[b, :n], rtol=1e-5, atol=1e-5,
                                   msg=f"{source} at TP={tp}, PP={pp}, sample {b}")


def test_gelu_follows_the_source(converted):
    assert read_model_config(converted["megatron-mp1"][1][1, 1])[0].gelu == "tanh"
    assert read_model_config(converted["hub-bin"][1][1, 1])[0].gelu == "erf"
    # The difference is real: a tanh-GeLU reference misses the hub model's logits by far more than 1e-5.
    state = random_glm_state(rows=ROWS, seed=3)
    ids, pos, sep, _ = batch()
    gap = (reference_logits(state, HEADS, ids, pos, sep, "tanh") - reference_logits(state, HEADS, ids, pos, sep,
                                                                                     "erf")).abs().max()
    assert gap > 1e-4


def test_summary_names_format_shards_parameters_vocabulary_layout(tmp_path):
    write_megatron(str(tmp_path / "src"), random_glm_state(rows=ROWS), 4)
    text = convert_glm_checkpoint(str(tmp_path / "src"), str(tmp_path / "out"), 2, 2,
                                  ImportOptions(num_attention_heads=HEADS, vocab_size=VOCAB))
    assert "THUDM Megatron layout, 4 model-parallel shards" in text
    assert "parameters: 49,280" in text and "vocabulary: 265 ids, padded to 512 rows at TP=2" in text
    assert "TP=2, PP=2 (4 files)" in text
    assert sorted(os.listdir(tmp_path / "out")) == ["config.yaml", "iter_0000000", "latest"]

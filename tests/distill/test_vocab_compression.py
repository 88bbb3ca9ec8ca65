"""Vocabulary compression at run time, below the engine: the sliced teacher decodes exactly like the
full teacher gathered at the kept ids (TP ∈ {1, 2, 4}, PP ∈ {1, 2}); the run's checks stop with one
line naming the file and the field; the artifact is copied into save_dir and exported with the student."""
import dataclasses
import json
import os
import re

import pytest
import torch
import yaml

from megatron_glmd.compress.artifact import load_artifact
from megatron_glmd.config import ConfigError, from_dict, pad_vocab_size, run_config_from_dict
from megatron_glmd.convert import write_checkpoint
from megatron_glmd.convert.export import export_checkpoint
from megatron_glmd.distill import vocab_compression as vc
from megatron_glmd.model import GLMStage
from megatron_glmd.parallel import ParallelGrid, gather_from_tp
from tests.distill import decoder_cases
from tests.distill.compressed_cases import build_artifact, compressed, tokens
from tests.distill.engine_cases import SEQ, VOCAB, run_config
from tests.distill.synthetic import SyntheticGLMSamples
from tests.distributed import run_distributed
from tests.model.helpers import glm_batch

SEED, KEPT = 1234, 128
CONFIG = from_dict({"preset": "tiny-teacher", "vocab_size": VOCAB, "max_sequence_length": 32,
                    "hidden_dropout": 0.0, "attention_dropout": 0.0})


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A teacher checkpoint holding GLMStage's seeded initial weights, and its artifact (K = 128 of 300)."""
    root = tmp_path_factory.mktemp("vc")
    state = GLMStage(CONFIG).init_weights(SEED).state_dict()
    state["word_embeddings.weight"] = state["word_embeddings.weight"][:VOCAB].clone()
    write_checkpoint(str(root / "teacher"), CONFIG, state)
    path = build_artifact(str(root / "teacher"), str(root / "artifact"), SyntheticGLMSamples(64, SEQ, VOCAB), KEPT)
    return str(root / "teacher"), path


def _teacher_logits(rank, world, pp, config_dict, artifact_dir):
    """Full and sliced logits of one seeded teacher at TP = world, PP = pp (stages run in turn here)."""
    grid = ParallelGrid.build(tp_size=world)
    config = from_dict(config_dict)
    stages = [GLMStage(config, tp_group=grid.tp_group, pp_rank=k, pp_size=pp).init_weights(SEED).eval()
              for k in range(pp)]
    ids, position_ids, sep, length = glm_batch(config.vocab_size)
    with torch.no_grad():
        hidden = ids
        for k, stage in enumerate(stages[:-1]):
            hidden = stage(hidden, position_ids if k == 0 else None, sep, length)
        last_positions = position_ids if pp == 1 else None
        full = gather_from_tp(stages[-1](hidden, last_positions, sep, length), grid.tp_group)
        stages[-1].decode_with(load_artifact(artifact_dir).teacher_output_shard(grid.tp_rank, world))
        sliced = gather_from_tp(stages[-1](hidden, last_positions, sep, length), grid.tp_group)
    return full, sliced


@pytest.mark.parametrize("pp", [1, 2])
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_sliced_teacher_logits_equal_full_logits_at_kept_ids(artifact, tp, pp):
    kept = load_artifact(artifact[1]).kept_ids
    for rank, (full, sliced) in enumerate(run_distributed(tp, _teacher_logits, pp, dataclasses.asdict(CONFIG),
                                                          artifact[1])):
        assert full.dtype == sliced.dtype == torch.float32
        assert (full.shape[-1], sliced.shape[-1]) == (pad_vocab_size(VOCAB, tp), pad_vocab_size(KEPT, tp))
        assert torch.equal(sliced[..., :KEPT], full[..., :VOCAB][..., kept]), (tp, pp, rank)
        assert not sliced[..., KEPT:].any()    # padding rows of the sliced matrix are zero


def test_decode_with_is_frozen_unsaved_and_in_the_models_dtype(artifact):
    teacher = GLMStage(CONFIG.replace(dtype="bf16")).init_weights(SEED)
    names = set(teacher.state_dict())
    teacher.decode_with(load_artifact(artifact[1]).teacher_output_shard())
    assert teacher.output_weight.dtype == torch.bfloat16 and not teacher.output_weight.requires_grad
    assert set(teacher.state_dict()) == names and "output_weight" not in dict(teacher.named_parameters())
    with pytest.raises(ValueError, match=r"must be \[rows, 64\]"):
        teacher.decode_with(torch.zeros(128, 7))
    with pytest.raises(ValueError, match="another stage"):
        GLMStage(CONFIG, pp_rank=0, pp_size=2).decode_with(torch.zeros(128, CONFIG.hidden_size))


def test_student_vocab_size_is_k_or_derived_from_v(artifact, tmp_path):
    base = run_config("distill", 1, 1, str(tmp_path / "s"))
    cfg, loaded, note = vc.prepare_run(compressed(base, artifact[1]))
    assert cfg.model.vocab_size == KEPT and loaded.kept_size == KEPT and "derived as K" in note
    cfg2, _, note2 = vc.prepare_run(dataclasses.replace(compressed(base, artifact[1]),
                                                        model=base.model.replace(vocab_size=KEPT)))
    assert cfg2.model.vocab_size == KEPT and "derived" not in note2
    with pytest.raises(ConfigError, match=r"^model.vocab_size=200, but .*summary.json keeps kept_size=128 of "
                                          r"vocab_size=300 ids: set model.vocab_size to 128"):
        vc.prepare_run(dataclasses.replace(compressed(base, artifact[1]), model=base.model.replace(vocab_size=200)))
    assert vc.prepare_run(base) == (base, None, None)    # no section: nothing changes


def test_a_decoder_teacher_may_have_more_rows_than_ids(artifact, tmp_path):
    """Qwen2.5's embedding has 152,064 rows for 151,665 tokenizer ids (here 520 for 300): a decoder
    run given the row count derives K, a decoder teacher with rows >= v fits; GLM's vocabulary is its
    tokenizer's, so a GLM run or teacher of another size stays refused."""
    rows, summary = 520, os.path.join(artifact[1], "summary.json")
    decoder = decoder_cases.run_config("distill", 1, 1, str(tmp_path / "s"))
    cfg, _, note = vc.prepare_run(dataclasses.replace(compressed(decoder, artifact[1]),
                                                      model=decoder.model.replace(vocab_size=rows)))
    assert cfg.model.vocab_size == KEPT and cfg.model.is_decoder
    assert f"(model.vocab_size {rows} is embedding rows for {VOCAB} ids, the full vocabulary: the student's " \
           "is derived as K)" in note
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"model.vocab_size=200, but {summary} keeps kept_size=128 of vocab_size=300 ids: set model.vocab_size "
            "to 128 (or 300, or the teacher's embedding rows >= 300, from which K is derived)")):
        vc.prepare_run(dataclasses.replace(compressed(decoder, artifact[1]),
                                           model=decoder.model.replace(vocab_size=200)))
    glm = run_config("distill", 1, 1, str(tmp_path / "g"))
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"model.vocab_size={rows}, but {summary} keeps kept_size=128 of vocab_size=300 ids: set "
            "model.vocab_size to 128 (or 300 from")):
        vc.prepare_run(dataclasses.replace(compressed(glm, artifact[1]), model=glm.model.replace(vocab_size=rows)))

    loaded = load_artifact(artifact[1])
    teacher = from_dict({**decoder_cases.TEACHER, "vocab_size": rows, "max_sequence_length": 32})
    assert teacher.hidden_size == loaded.teacher_output_weight.shape[1]
    vc.check_teacher(teacher, loaded, "t/config.yaml")
    vc.check_teacher(teacher.replace(vocab_size=VOCAB), loaded, "t/config.yaml")
    sliced_from = dataclasses.replace(loaded, summary={**loaded.summary, "teacher": {"vocab_rows": rows}})
    vc.check_teacher(teacher, sliced_from, "t/config.yaml")
    for config, artifact_of, message in [
            (teacher.replace(vocab_size=VOCAB - 1), loaded, "teacher vocab_size=299, but vocab_compression.artifact "
                                                            "was made for vocab_size=300 (a teacher of another"),
            (CONFIG.replace(vocab_size=rows), loaded, "teacher vocab_size=520, but vocab_compression.artifact was "
                                                      "made for vocab_size=300"),
            (teacher.replace(vocab_size=512), sliced_from, "teacher vocab_size=512, but vocab_compression.artifact "
                                                           "was sliced from a teacher of 520 embedding rows")]:
        with pytest.raises(ConfigError, match="^" + re.escape("t/config.yaml: " + message)):
            vc.check_teacher(config, artifact_of, "t/config.yaml")


class _Tokenizer:
    pad_id, unk_id, cls_id, sep_id, mask_id = range(5)

    def __init__(self, vocab_size=VOCAB, names=None, **ids):
        self.vocab_size, self._tokens = vocab_size, names or tokens(vocab_size)
        self.__dict__.update(ids)

    def tokens(self):
        return self._tokens


def test_checks_name_the_file_and_the_field(artifact):
    cfg = compressed(run_config("distill", 1, 1, None), artifact[1])
    vc.check_tokenizer(cfg, _Tokenizer())
    summary, tensors = os.path.join(artifact[1], "summary.json"), os.path.join(artifact[1], "tensors.safetensors")
    for tokenizer, message in [
            (_Tokenizer(vocab_size=400), f"{summary}: vocab_size: 300, but the run's tokenizer has 400 ids"),
            (_Tokenizer(names=["x"] * VOCAB), f"{summary}: tokens_sha256: made for another tokenizer"),
            (_Tokenizer(mask_id=VOCAB - 1), f"{tensors}: kept_ids: the tokenizer's special id 299 is not kept")]:
        with pytest.raises(ConfigError, match="^" + re.escape(f"vocab_compression.artifact: {message}")):
            vc.check_tokenizer(cfg, tokenizer)
    loaded = load_artifact(artifact[1])
    for teacher, message in [(CONFIG.replace(vocab_size=301), "teacher vocab_size=301, but vocab_compression."
                                                              "artifact was made for vocab_size=300"),
                             (CONFIG.replace(hidden_size=128, num_attention_heads=4), "teacher hidden_size=128, but "),
                             (CONFIG.replace(embedding_size=32), "embedding_size: a factorised teacher")]:
        with pytest.raises(ConfigError, match="^t/config.yaml: " + message):
            vc.check_teacher(teacher, loaded, "t/config.yaml")
    with pytest.raises(ConfigError, match="^vocab_compression.artifact nowhere does not exist"):
        compressed(run_config("pretrain", 1, 1, None), "nowhere").validate(1)


def test_config_section_round_trips_through_yaml(artifact):
    cfg = compressed(run_config("distill", 1, 1, None), artifact[1])
    back = run_config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert back == cfg and run_config("distill", 1, 1, None).vocab_compression.artifact is None


def test_copy_in_save_dir_is_kept_and_another_artifact_refused_on_resume(artifact, tmp_path):
    save_dir = str(tmp_path / "run")
    vc.keep_copy(artifact[1], save_dir)
    copy = os.path.join(save_dir, "vocab_compression")
    assert sorted(os.listdir(copy)) == ["summary.json", "tensors.safetensors"]
    assert [n for n in os.listdir(save_dir) if n != "vocab_compression"] == []      # no temporary left
    assert torch.equal(load_artifact(copy).token_map, load_artifact(artifact[1]).token_map)
    other = build_artifact(artifact[0], str(tmp_path / "other"), SyntheticGLMSamples(64, SEQ, VOCAB), 256)
    cfg = compressed(run_config("distill", 1, 1, save_dir), other)
    with pytest.raises(ConfigError, match=f"^{copy}/summary.json: differs from vocab_compression.artifact's"):
        vc.prepare_run(cfg)
    vc.keep_copy(other, save_dir)    # a run that does not resume replaces it
    assert load_artifact(copy).kept_size == 256


def test_export_carries_the_artifact(artifact, tmp_path):
    student = CONFIG.replace(vocab_size=KEPT)
    state = GLMStage(student).init_weights(SEED).state_dict()
    write_checkpoint(str(tmp_path / "student"), student, state)
    vc.keep_copy(artifact[1], str(tmp_path / "student"))
    summary = export_checkpoint(str(tmp_path / "student"), str(tmp_path / "hub"))
    assert "vocab_compression/ (the student's compressed vocabulary" in summary
    hub = tmp_path / "hub"
    assert json.loads((hub / "config.json").read_text())["megatron_glmd"]["vocab_compression"] == "vocab_compression"
    assert torch.equal(load_artifact(str(hub / "vocab_compression")).kept_ids, load_artifact(artifact[1]).kept_ids)

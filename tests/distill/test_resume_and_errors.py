"""Resume reproduces the uninterrupted loss curve; bad configurations stop before any work."""
import os
import re
import shutil

import pytest
import torch

from megatron_glmd.config import ConfigError
from megatron_glmd.checkpoint import checkpointing as ckpt
from megatron_glmd.config import load_run_config, run_config_from_dict
from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed


def _with_dropout(cfg):
    """Dropout on (so RNG restore matters) and a plain Adam that learns within a few steps."""
    values = cfg.to_dict()
    values["model"].update(hidden_dropout=0.1, attention_dropout=0.1)
    values["optimizer"].update(lr=3e-3, eps=1e-6)
    return run_config_from_dict(values)


def _train(rank, world, save_dir, iterations, total):
    """Train to `iterations` (resuming from save_dir when it holds a checkpoint) with a plan of `total`."""
    cfg = _with_dropout(run_config("pretrain", 1, 1, save_dir, iterations=total))
    trainer = Trainer(cfg, train_data())
    start = trainer.iteration
    records = []
    while trainer.iteration < iterations:
        records.append(trainer.train_step()["loss"])
    trainer.save()
    return start, records


def test_resume_reproduces_uninterrupted_curve_with_dropout_and_zero1(tmp_path):
    straight = run_distributed(2, _train, str(tmp_path / "straight"), 6, 6)
    first = run_distributed(2, _train, str(tmp_path / "resumed"), 3, 6)
    # A crash while writing the next checkpoint leaves a partial directory behind: ignored.
    os.makedirs(tmp_path / "resumed" / "iter_0000006.partial")
    second = run_distributed(2, _train, str(tmp_path / "resumed"), 6, 6)
    assert first[0][0] == 0 and second[0][0] == 3
    resumed_curve = first[0][1] + second[0][1]
    assert resumed_curve == straight[0][1]  # bit-identical: RNG, optimizer, scheduler and data restored
    assert straight[0][1][-1] < straight[0][1][0]
    saved = load_run_config(str(tmp_path / "resumed" / "config.yaml"))
    assert saved.model.hidden_dropout == 0.1 and saved.train.iterations == 6
    assert open(tmp_path / "resumed" / "latest").read() == "iter_0000006"


def test_interrupted_save_keeps_previous_checkpoint(tmp_path):
    """Publishing is the last step: without it, `latest` still names the previous complete checkpoint."""
    save_dir = tmp_path / "run"
    run_distributed(1, _train, str(save_dir), 2, 6)
    shutil.copytree(save_dir / "iter_0000002", save_dir / "iter_0000004.partial")
    assert ckpt.latest_tag(str(save_dir)) == "iter_0000002"
    start, _ = run_distributed(1, _train, str(save_dir), 3, 6)[0]
    assert start == 2


def _cfg(tmp_path, **changes):
    base = run_config("distill", 1, 1, str(tmp_path / "student"), teacher=str(tmp_path / "teacher")).to_dict()
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if key:
            base[section][key] = value
        else:
            base[section] = value
    return run_config_from_dict(base)


def _teacher_dir(tmp_path, vocab_size=300):
    """A minimal teacher directory: a config.yaml as a pretrain run leaves it (weights are not needed
    for these checks, which must fail before any model is built)."""
    teacher = tmp_path / "teacher"
    teacher.mkdir(exist_ok=True)
    values = run_config("pretrain", 1, 1, str(teacher)).to_dict()
    values["model"]["vocab_size"] = vocab_size
    import yaml
    (teacher / "config.yaml").write_text(yaml.safe_dump(values))
    return teacher


@pytest.mark.parametrize("changes,message", [
    ({"parallel.tp": 3}, "tensor-parallel size 3 must divide num_attention_heads (4)"),
    ({"train.global_batch_size": 6, "train.micro_batch_size": 4},
     "train.global_batch_size 6 is not divisible by train.micro_batch_size * data-parallel size = 4 * 1"),
    ({"teacher_checkpoint": "/nonexistent/teacher"}, "teacher_checkpoint /nonexistent/teacher does not exist"),
    ({"loss.temperature": 0.0}, "loss.temperature must be a finite number > 0, got 0.0"),
    ({"data.seq_length": 64}, "data.seq_length 64 exceeds model.max_sequence_length 32"),
    pytest.param({"train.precision": "fp16"}, "train.precision fp16 needs a GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-only refusal")),
])
def test_bad_configurations_stop_before_any_work(tmp_path, changes, message, monkeypatch):
    _teacher_dir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "3" if changes.get("parallel.tp") == 3 else "1")
    built = []
    monkeypatch.setattr("megatron_glmd.engine.trainer.init_distributed", lambda: built.append(True))
    with pytest.raises(ConfigError, match=re.escape(message)):
        Trainer(_cfg(tmp_path, **changes), train_data())
    assert not built


def test_teacher_vocabulary_mismatch_is_named(tmp_path, monkeypatch):
    _teacher_dir(tmp_path, vocab_size=512)
    monkeypatch.setattr("megatron_glmd.engine.trainer.init_distributed", lambda: pytest.fail("work started"))
    with pytest.raises(ConfigError, match=r"teacher vocab_size=512, student vocab_size=300"):
        Trainer(_cfg(tmp_path), train_data())


def test_teacher_without_complete_checkpoint_is_named(tmp_path, monkeypatch):
    _teacher_dir(tmp_path)
    monkeypatch.setattr("megatron_glmd.engine.trainer.init_distributed", lambda: pytest.fail("work started"))
    with pytest.raises(ConfigError, match="has no 'latest' file"):
        Trainer(_cfg(tmp_path), train_data())


def test_distill_without_teacher_is_named(tmp_path):
    with pytest.raises(ConfigError, match="mode 'distill' needs teacher_checkpoint"):
        _cfg(tmp_path, teacher_checkpoint=None).validate(1)


def test_resume_with_other_tp_is_named(tmp_path, monkeypatch):
    save_dir = tmp_path / "student"
    save_dir.mkdir()
    (save_dir / "iter_0000002").mkdir()
    (save_dir / "latest").write_text("iter_0000002")
    import yaml
    saved = run_config("pretrain", 2, 1, str(save_dir))
    (save_dir / "config.yaml").write_text(yaml.safe_dump(saved.to_dict()))
    monkeypatch.setattr("megatron_glmd.engine.trainer.init_distributed", lambda: pytest.fail("work started"))
    with pytest.raises(ConfigError, match=r"resume checkpoint has parallel.tp=2, this run has parallel.tp=1"):
        Trainer(run_config("pretrain", 1, 1, str(save_dir)), train_data())

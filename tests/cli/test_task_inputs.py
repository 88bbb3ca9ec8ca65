"""Bad input to a task-mode run stops glmd-train with status 2 and one ``error:`` line naming the file,
line and field (or the config field), before any work: no process group, nothing written."""
import json
import os

import pytest
import torch.distributed as dist
import yaml

from megatron_glmd.cli.train import main
from tests.distill.task_cases import make_tokenizer, vocab_size, write_copa, write_topic_task


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_inputs")
    tok = make_tokenizer(str(root / "tok"))
    return {"tok": tok, "topics": write_topic_task(str(root / "topics")), "copa": write_copa(str(root / "copa")),
            "vocab": vocab_size(tok)}


def _config(files, tmp_path, **changes):
    values = {"mode": "finetune", "task": {"file": files["topics"]},
              "model": {"preset": "tiny-student", "vocab_size": files["vocab"], "max_sequence_length": 64},
              "train": {"epochs": 1, "micro_batch_size": 2, "global_batch_size": 4},
              "data": {"tokenizer_model": files["tok"], "seq_length": 64},
              "checkpoint": {"save_dir": str(tmp_path / "run")}}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        elif value is None:
            values.pop(key, None)
        else:
            values[key] = value
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


def _rewrite(path, edit):
    lines = open(path, encoding="utf-8").read().splitlines()
    edit(lines)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _copy_task(files, tmp_path):
    """A private copy of the topics task (its YAML and data) to damage."""
    folder = tmp_path / "task"
    folder.mkdir()
    base = os.path.dirname(files["topics"])
    for name in ("task.yaml", "train.jsonl", "dev.jsonl"):
        (folder / name).write_text(open(os.path.join(base, name), encoding="utf-8").read(), encoding="utf-8")
    return folder


def _drop_text(lines):
    lines[1] = json.dumps({"label": "io"})


def _bad_label(lines):
    lines[0] = json.dumps({"text": "Open the file.", "label": "net"})


def _no_mask(lines):
    lines[:] = [line.replace(" [MASK]", " it") if line.startswith("pattern") else line for line in lines]


def _long_word(lines):
    lines[:] = [line.replace("io: file", "io: filesystemsxyz") for line in lines]


# (what is damaged, the damage, the text the one error line must hold)
TASK_FILE_CASES = [
    ("train.jsonl", _drop_text, "train.jsonl:2: field 'text': missing"),
    ("train.jsonl", _bad_label, "train.jsonl:1: field 'label': label 'net' is not one of"),
    ("task.yaml", _no_mask, "task.yaml:4: pattern: the pattern must hold exactly one [MASK]"),
    ("task.yaml", _long_word, "task.yaml:6: verbalizer.io: the word 'filesystemsxyz' is"),
]


def _check(capsys, tmp_path, config, named):
    assert main(["--config", config]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert named in lines[0], (named, lines[0])
    assert not dist.is_initialized() and not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("name,damage,named", TASK_FILE_CASES, ids=["missing-field", "label", "no-mask", "word"])
def test_bad_task_file(files, tmp_path, capsys, name, damage, named):
    folder = _copy_task(files, tmp_path)
    _rewrite(str(folder / name), damage)
    _check(capsys, tmp_path, _config(files, tmp_path, task={"file": str(folder / "task.yaml")}), named)


def _other_shape_checkpoint(files, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    saved = {"mode": "pretrain", "model": {"preset": "tiny-teacher", "vocab_size": files["vocab"]},
             "data": {"train_prefix": "x", "tokenizer_model": files["tok"]}}
    (folder / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    return str(folder)


CONFIG_CASES = {
    "no-task": (dict(task=None), "mode 'finetune' needs a task"),
    "unknown-superglue": (dict(task={"file": None, "name": "sst2", "data_dir": "."}), "task.name must be one of"),
    "no-teacher": (dict(mode="task_distill"), "mode 'task_distill' needs teacher_checkpoint"),
    "no-init": (dict(init_checkpoint="/nonexistent/run"), "init_checkpoint /nonexistent/run does not exist"),
    "evaluate-without-model": (dict(mode="evaluate"), "mode 'evaluate' needs init_checkpoint"),
    "too-few-choices": (dict(task={"file": None, "name": "copa", "num_choices": 1}), "task.num_choices is 1"),
    "too-short": (dict(data={"seq_length": 8}), "train.jsonl:1: "),
    "ratio-and-iters": (dict(optimizer={"warmup_ratio": 0.1, "warmup_iters": 3}), "warmup_iters or warmup_ratio"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_task_config(files, tmp_path, capsys, case):
    changes, named = CONFIG_CASES[case]
    changes = dict(changes)
    if case == "too-few-choices":
        changes["task"] = {"file": None, "name": "copa", "data_dir": files["copa"], "num_choices": 1}
    if case == "too-short":
        named = named.replace("train.jsonl", os.path.join(os.path.dirname(files["topics"]), "train.jsonl"))
    _check(capsys, tmp_path, _config(files, tmp_path, **changes), named)


def test_init_checkpoint_of_another_shape(files, tmp_path, capsys):
    init = _other_shape_checkpoint(files, tmp_path)
    _check(capsys, tmp_path, _config(files, tmp_path, init_checkpoint=init),
           f"{init}/config.yaml: init model has num_layers=4, this run expects num_layers=2")


def test_missing_superglue_split(files, tmp_path, capsys):
    folder = tmp_path / "copa"
    folder.mkdir()
    (folder / "train.jsonl").write_text(open(os.path.join(files["copa"], "train.jsonl")).read())
    _check(capsys, tmp_path, _config(files, tmp_path, task={"file": None, "name": "copa", "data_dir": str(folder)}),
           f"{folder}/val.jsonl: task data file does not exist")

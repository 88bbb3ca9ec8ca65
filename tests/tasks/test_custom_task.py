"""A task of your own in YAML: the typed description, jsonl and tsv data, the encoded samples, the
protected verbalizer ids, and bad input stopping with one line naming the file, line and field."""
import pytest

from megatron_glmd.config import ConfigError
from megatron_glmd.config.task import load_task_config, parse_pattern
from megatron_glmd.data.errors import DataError
from megatron_glmd.tasks import (ClozeDataset, load_task, protected_token_ids, read_split, read_task_file,
                                 superglue_task, verbalizer_token_ids)
from megatron_glmd.tasks.custom import task_from_config

from .helpers import check_single_layout, write_jsonl

YAML = """name: topics
train: data/train.jsonl
dev: data/dev.tsv
label_field: topic
pattern: "{text} This is about [MASK]."
verbalizer:
  io: file
  oop: class
  no: list
shorten: [text]
"""


def _task_dir(tmp_path, yaml_text=YAML):
    (tmp_path / "data").mkdir(exist_ok=True)
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"text": "Open it and read the lines.", "topic": "io"},
                                                    {"text": "Define a method.", "topic": "oop", "extra": 1}])
    (tmp_path / "data" / "dev.tsv").write_text("topic\ttext\nno\tAppend \"an item\".\n", encoding="utf-8")
    (tmp_path / "task.yaml").write_text(yaml_text, encoding="utf-8")
    return str(tmp_path / "task.yaml")


def test_description_is_typed_and_paths_follow_the_yaml(tmp_path):
    cfg = load_task_config(_task_dir(tmp_path))
    assert cfg.labels == ("io", "oop", "no") and cfg.fields == ("text",) and cfg.shortenable == ("text",)
    assert cfg.train == str(tmp_path / "data" / "train.jsonl") and cfg.test == ""
    assert cfg.where("verbalizer.no") == f"{tmp_path / 'task.yaml'}:9: verbalizer.no"   # "no" stays text
    assert [p.kind for p in parse_pattern(cfg.pattern)] == ["field", "text", "mask", "text"]


def test_jsonl_and_tsv_splits_encode_as_glm_samples(tmp_path, tokenizer):
    cfg = load_task_config(_task_dir(tmp_path))
    task = task_from_config(cfg)
    train, dev = read_split(cfg, "train"), read_split(cfg, "dev")
    assert [(e.fields["text"], e.label) for e in train] == [("Open it and read the lines.", 0), ("Define a method.", 1)]
    assert dev[0].fields == {"text": 'Append "an item".'} and dev[0].label == 2 and dev[0].guid.endswith("dev.tsv:2")
    ids = verbalizer_token_ids(task, tokenizer)
    assert ids == [tokenizer.encode(" " + w)[0] for w in ("file", "class", "list")]
    dataset = ClozeDataset(task, train + dev, tokenizer, 32)
    check_single_layout(dataset[2], tokenizer, 'Append "an item". This is about', ".", ids[2])
    batch = dataset.collate([dataset[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 32) and batch["position_ids"].shape == (3, 2, 32)
    assert batch["label"].tolist() == [0, 1, 2]
    assert batch["sep"].tolist() == [dataset[i]["sep"] for i in range(3)]
    with pytest.raises(ConfigError, match=r"names no test file"):
        read_split(cfg, "test")


def test_protected_ids_are_every_verbalizer_token(tmp_path, tokenizer):
    task = load_task(_task_dir(tmp_path))
    rte = superglue_task("rte", verbalizer=["true", "false"])
    expected = sorted(set(verbalizer_token_ids(task, tokenizer)) | set(verbalizer_token_ids(rte, tokenizer)))
    assert protected_token_ids([task, rte, superglue_task("copa")], tokenizer) == expected and len(expected) == 5


def _error(call) -> str:
    with pytest.raises((DataError, ConfigError)) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_data_errors_name_file_line_and_field(tmp_path):
    cfg = load_task_config(_task_dir(tmp_path))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine", "topic": "io"}, "", {"topic": "io"}])
    assert _error(lambda: read_task_file(cfg, bad)) == f"{bad}:3: field 'text': missing"
    bad = write_jsonl(tmp_path / "bad2.jsonl", [{"text": "x", "topic": "sports"}])
    assert _error(lambda: read_task_file(cfg, bad)) == \
        f"{bad}:1: field 'topic': label 'sports' is not one of 'io', 'oop', 'no'"
    bad = write_jsonl(tmp_path / "bad3.jsonl", [{"text": "x"}])
    assert _error(lambda: read_task_file(cfg, bad)) == f"{bad}:1: field 'topic': missing"
    assert read_task_file(cfg, bad, labelled=False)[0].label == -1
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("topic\ttext\nio\tone\nio\n", encoding="utf-8")
    assert _error(lambda: read_task_file(cfg, str(tsv))) == f"{tsv}:3: 1 columns, the header has 2"


@pytest.mark.parametrize("change, message", [
    (('"{text} This is about [MASK]."', '"{text} This is about it."'),
     "5: pattern: the pattern must hold exactly one [MASK], found 0 in '{text} This is about it.'"),
    (('"{text} This is about [MASK]."', '"{text} {topic} [MASK]."'), "5: pattern: uses the label field {topic}"),
    (("  oop: class\n", "  oop: two words\n"), "8: verbalizer.oop: label 'oop' needs one word, got 'two words'"),
    (("shorten: [text]", "shorten: [title]"), "10: shorten: 'title' is not a field of the pattern (text)"),
    (("label_field: topic", "labels: topic"), "4: labels: unknown task key"),
    (("dev: data/dev.tsv", "dev: data/dev.csv"), "3: dev: "),
])
def test_description_errors_name_file_line_and_key(tmp_path, change, message):
    path = _task_dir(tmp_path, YAML.replace(*change))
    assert _error(lambda: load_task_config(path)).startswith(f"{path}:{message}")


def test_several_token_word_names_its_yaml_line(tmp_path, tokenizer):
    path = _task_dir(tmp_path, YAML.replace("  oop: class\n", "  oop: Zyxwq\n"))
    message = _error(lambda: verbalizer_token_ids(load_task(path), tokenizer))
    assert message.startswith(f"{path}:8: verbalizer.oop: the word 'Zyxwq' is ")
    assert "a verbalizer word must be exactly one token" in message

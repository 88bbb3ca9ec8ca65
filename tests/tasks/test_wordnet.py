"""The WordNet converter on a hand-written ``data.noun`` (the real one comes from Debian's wordnet-base):
records, the offset-determined split, the written task, and the CLI's one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from megatron_glmd.config.task import load_task_config
from megatron_glmd.data.errors import DataError
from megatron_glmd.tasks import read_split
from megatron_glmd.tasks.wordnet import build_records, read_noun_synsets, split_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
SYNSETS = [
    ("02084071", 5, "dog domestic_dog", 'a member of the genus Canis; "the dog barked all night"'),
    ("02121620", 5, "cat true_cat", "feline mammal usually having thick soft fur"),
    ("12345678", 20, "oak oak_tree", "a deciduous tree of the genus Quercus"),
    ("07747607", 13, "apple", "fruit with red or yellow or green skin and sweet to tart crisp whitish flesh"),
    ("10129825", 18, "girl miss", "a young woman; \"a young lady of 18\""),
    ("03001627", 6, "chair", "a seat for one person, with a support for the back"),
]


def _data_noun(tmp_path):
    lines = [HEADER]
    for offset, lex, words, gloss in SYNSETS:
        ws = words.split()
        lines.append(f"{offset} {lex:02d} n {len(ws):02x} " + " ".join(f"{w} 0" for w in ws)
                     + f" 001 @ 00001740 n 0000 | {gloss}  \n")
    path = tmp_path / "data.noun"
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


def test_records_and_splits(tmp_path):
    path = _data_noun(tmp_path)
    rows = list(read_noun_synsets(path))
    assert rows[0] == ("02084071", "animal", "dog", "a member of the genus Canis")
    assert rows[4][1:] == ("person", "girl", "a young woman")
    records = build_records(path, ["animal", "person"])
    everything = [r for split in records.values() for r in split]
    assert sorted(r["word"] for r in everything) == ["cat", "dog", "girl"]
    for split, items in records.items():
        assert all(split_of(r["synset"]) == split for r in items)
    capped = build_records(path, ["animal", "person"], max_per_label=1)
    assert all(sum(r["label"] == "animal" for r in items) <= 1 for items in capped.values())
    with pytest.raises(DataError, match="unknown WordNet noun category 'vehicle'"):
        build_records(path, ["vehicle"])


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "data.noun"
    path.write_text(HEADER + "02084071 05 n 01 dog 0 000 | ok\nnot a synset\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        list(read_noun_synsets(str(path)))
    assert str(err.value) == f"{path}:3: not a WordNet noun synset line"


def tool(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "wordnet_task.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_a_task_that_reads_back(tmp_path, tokenizer_model):
    _data_noun(tmp_path)
    out = tmp_path / "task"
    done = tool("--out", out, "--wordnet-dir", tmp_path, "--labels", "animal,artifact,person",
                "--verbalizer", "animal=file,artifact=class,person=list", "--tokenizer-model", tokenizer_model)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out / 'task.yaml'}: train ")
    cfg = load_task_config(str(out / "task.yaml"))
    assert cfg.labels == ("animal", "artifact", "person") and cfg.verbalizer[1] == ("artifact", "class")
    records = [json.loads(line) for split in ("train", "dev", "test")
               for line in (out / f"{split}.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(set(r) == {"text", "word", "label", "synset"} for r in records)
    examples = [e for split in ("train", "dev", "test") for e in read_split(cfg, split)]
    assert sorted(e.fields["text"] for e in examples) == sorted(r["text"] for r in records)
    failed = tool("--out", out, "--wordnet-dir", tmp_path / "none")
    assert failed.returncode == 1 and failed.stderr.strip().startswith("error: ") and "wordnet-base" in failed.stderr
    failed = tool("--out", out, "--wordnet-dir", tmp_path, "--verbalizer", "animal=Zyxwq",
                  "--tokenizer-model", tokenizer_model)
    assert failed.returncode == 1 and failed.stderr.startswith("error: --verbalizer animal: the word 'Zyxwq' is ")

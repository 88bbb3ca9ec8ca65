"""Shared set-up of the task-mode engine tests: a SentencePiece tokenizer, a single-token task of our
own (YAML + jsonl) and a multi-token SuperGLUE task (COPA lines), and tiny run configurations.

Everything is a pure function of its arguments, so that every layout of a test reads the same data."""
from __future__ import annotations

import json
import os

from megatron_glmd.config import run_config_from_dict
from megatron_glmd.data.hf_tokenizer import HFTokenizer, train_byte_level_bpe
from megatron_glmd.data.tokenizer import GLMTokenizer, train_sentencepiece
from tests.data.corpus import paragraphs, simple_sentences
from tests.distill import decoder_cases

SEQ = 64
WORDS = {"io": "file", "oop": "class", "other": "list"}      # single tokens of the test vocabulary
DECODER_WORDS = {"io": "module", "oop": "object", "other": "list"}   # ... of the byte-level BPE's (with " ")


def make_tokenizer(root: str) -> str:
    """A 1200-piece SentencePiece model of Python's documentation (the tests' usual vocabulary)."""
    model = os.path.join(root, "spm.model")
    if not os.path.exists(model):
        os.makedirs(root, exist_ok=True)
        corpus = os.path.join(root, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(paragraphs()))
        train_sentencepiece([corpus], 1200, os.path.join(root, "spm"), character_coverage=1.0)
    return model


def make_bpe_tokenizer(root: str) -> str:
    """A 1000-id byte-level BPE ``tokenizer.json`` of the same documentation (the decoder family's)."""
    path = os.path.join(root, "tokenizer.json")
    if not os.path.exists(path):
        os.makedirs(root, exist_ok=True)
        train_byte_level_bpe(paragraphs(), 1000, path)
    return path


def vocab_size(tokenizer_model: str) -> int:
    if tokenizer_model.endswith(".json"):
        return HFTokenizer(tokenizer_model).vocab_size
    return GLMTokenizer(tokenizer_model).vocab_size


IO_WORDS = {"file", "files", "read", "write", "stream", "module", "modules", "import"}
OOP_WORDS = {"class", "object", "objects", "method", "methods", "attribute", "attributes", "instance"}


def _label(sentence: str) -> str:
    words = set(sentence.lower().replace(",", " ").replace(".", " ").split())
    return "io" if words & IO_WORDS else "oop" if words & OOP_WORDS else "other"


def write_topic_task(root: str, train: int = 48, dev: int = 20, pattern: str = "{text} This is about [MASK].",
                     words=None) -> str:
    """A three-label task of our own: short documentation sentences labelled by their topic."""
    os.makedirs(root, exist_ok=True)
    by_label = {}
    for s in simple_sentences():
        if len(s) < 90:
            by_label.setdefault(_label(s), []).append(s)
    mixed = [s for group in zip(*by_label.values()) for s in group]     # the labels take turns
    picked = {"train": mixed[:train], "dev": mixed[train:train + dev]}
    for split, items in picked.items():
        with open(os.path.join(root, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": s, "label": _label(s)}) + "\n" for s in items)
    lines = ["name: topics", "train: train.jsonl", "dev: dev.jsonl", f"pattern: {json.dumps(pattern)}",
             "verbalizer:"] + [f"  {label}: {word}" for label, word in (words or WORDS).items()]
    path = os.path.join(root, "task.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_copa(root: str, train: int = 16, dev: int = 12) -> str:
    """COPA lines in SuperGLUE's jsonl format (train.jsonl, val.jsonl) built from documentation sentences."""
    os.makedirs(root, exist_ok=True)
    sentences = [s.rstrip(".") for s in simple_sentences() if len(s) < 45]
    for name, start, count in (("train.jsonl", 0, train), ("val.jsonl", 3 * train, dev)):
        with open(os.path.join(root, name), "w", encoding="utf-8") as f:
            for i in range(count):
                a, b, c = sentences[start + 3 * i:start + 3 * i + 3]
                f.write(json.dumps({"premise": a + ".", "choice1": b + ".", "choice2": c + ".",
                                    "question": "cause" if i % 2 else "effect", "idx": i, "label": i % 2}) + "\n")
    return root


def task_config(mode: str, tp: int, pp: int, tokenizer_model: str, task: dict, save_dir: str = None,
                init: str = None, teacher: str = None, iterations: int = 4, **sections):
    """A tiny task-mode run at TP=tp, PP=pp (DP = world / (tp * pp)); the teacher is the larger preset.
    A ``tokenizer.json`` makes it a decoder run (tests/distill/decoder_cases.py's shapes)."""
    values = {
        "mode": mode, "parallel": {"tp": tp, "pp": pp}, "task": task,
        "train": {"iterations": iterations, "micro_batch_size": 2, "global_batch_size": 8, "seed": 7},
        "optimizer": {"lr": 1e-2, "warmup_iters": 1, "eps": 1e-3},
        "data": {"tokenizer_model": tokenizer_model, "seq_length": SEQ},
        "checkpoint": {"save_dir": save_dir},
        "logging": {"log_interval": 100, "progress_bar": False},
    }
    if init is None:
        shape = {"preset": "tiny-teacher" if mode == "finetune" else "tiny-student"}
        if tokenizer_model.endswith(".json"):
            shape = decoder_cases.TEACHER if mode == "finetune" else decoder_cases.STUDENT
        values["model"] = {**shape, "vocab_size": vocab_size(tokenizer_model), "hidden_dropout": 0.0,
                           "attention_dropout": 0.0, "max_sequence_length": 64}
    else:
        values["init_checkpoint"] = init
    if teacher is not None:
        values["teacher_checkpoint"] = teacher
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return run_config_from_dict(values)

#!/usr/bin/env python
"""Convert WordNet's noun definitions into a YAML classification task (jsonl splits + task.yaml).

    apt-get install wordnet-base          # Princeton WordNet 3.0, WordNet 3.0 license, Debian main
    python tools/wordnet_task.py --out data/wordnet \
        [--labels animal,plant,food,person] [--verbalizer artifact=tool] [--max-per-label 500] \
        [--wordnet-dir /usr/share/wordnet] [--pattern "{text} It is a kind of [MASK]."] [--tokenizer-model M]

Each definition is labelled with its lexicographer category (megatron_glmd/tasks/wordnet.py says
how records and splits are made). Writes OUT/train.jsonl, dev.jsonl, test.jsonl and task.yaml,
whose verbalizer maps each label to itself unless --verbalizer gives another word. With
--tokenizer-model the task is checked against that vocabulary (each word one token) before writing.
Prints the record count of each split.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--labels", default="animal,plant,food,person", help="comma-separated noun categories")
    p.add_argument("--verbalizer", default="", help="comma-separated LABEL=WORD for words other than the label")
    p.add_argument("--max-per-label", type=int, default=0, help="cap per label and split (0: all)")
    p.add_argument("--wordnet-dir", default=None, help="folder holding data.noun (default /usr/share/wordnet)")
    p.add_argument("--pattern", default="{text} It is a kind of [MASK].")
    p.add_argument("--name", default="wordnet-nouns")
    p.add_argument("--tokenizer-model", help="check the verbalizer against this vocabulary")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body():
        from megatron_glmd.config import ConfigError
        from megatron_glmd.data.errors import DataError
        from megatron_glmd.tasks.task import make_task
        from megatron_glmd.tasks.wordnet import WORDNET_DIR, write_task
        verbalizer = {label.strip(): label.strip() for label in args.labels.split(",") if label.strip()}
        for item in filter(None, (x.strip() for x in args.verbalizer.split(","))):
            label, sep, word = item.partition("=")
            if not sep or label not in verbalizer or not word.strip():
                raise DataError(f"--verbalizer {item!r}: expected LABEL=WORD with LABEL one of --labels")
            verbalizer[label] = word.strip()
        if len(verbalizer) < 2:
            raise DataError("--labels: give at least two categories")
        try:
            task = make_task(args.name, args.pattern, list(verbalizer), list(verbalizer.values()),
                             where=[f"--verbalizer {label}" for label in verbalizer])
        except ConfigError as e:
            raise DataError(f"--pattern: {e}") from None
        if args.tokenizer_model:
            from megatron_glmd.data.tokenizer import load_tokenizer
            from megatron_glmd.tasks.encode import verbalizer_token_ids
            verbalizer_token_ids(task, load_tokenizer(args.tokenizer_model))
        data_noun = os.path.join(args.wordnet_dir or WORDNET_DIR, "data.noun")
        counts = write_task(args.out, data_noun, verbalizer, args.max_per_label, args.pattern, args.name)
        print(f"wrote {os.path.join(args.out, 'task.yaml')}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return run(body)


if __name__ == "__main__":
    sys.exit(main())

"""A labelled English classification data set that installs offline: WordNet noun definitions
labelled with their lexicographer category ("supersense"), converted to a YAML task.

Source: Princeton WordNet 3.0, Debian package ``wordnet-base`` (``apt-get install wordnet-base``
puts ``data.noun`` in ``/usr/share/wordnet``), under the WordNet 3.0 license (permission to use,
copy, modify and distribute for any purpose without fee, keeping Princeton's copyright notice;
Debian main). Each noun synset has a definition written by lexicographers and is filed by them in
one of 26 noun categories (``noun.animal``, ``noun.plant``, ``noun.food``, ``noun.person``, ...):
"a member of the genus Canis ..." is ``animal``. Nothing is kept in the repository; the converter
reads the installed files.

A record is ``{"text": definition, "word": first lemma, "label": category, "synset": offset}``;
the definition is the gloss before its first quoted example. The split is a pure function of the
synset offset (CRC32 mod 10: 0 test, 1 dev, else train), so it does not move when the label set or
the per-label cap changes; within a split and label, records are kept in CRC32 order up to the cap.
"""
from __future__ import annotations

import json
import os
import zlib
from collections import defaultdict
from typing import Dict, Iterator, List, Sequence, Tuple

from ..atomic_io import atomic_write_text
from ..data.errors import DataError

WORDNET_DIR = "/usr/share/wordnet"
# lexnames(5WN): lexicographer file numbers of the noun categories
NOUN_CATEGORIES = {3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition",
                   10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location",
                   16: "motive", 17: "object", 18: "person", 19: "phenomenon", 20: "plant", 21: "possession",
                   22: "process", 23: "quantity", 24: "relation", 25: "shape", 26: "state", 27: "substance",
                   28: "time"}
SPLITS = ("train", "dev", "test")


def read_noun_synsets(path: str) -> Iterator[Tuple[str, str, str, str]]:
    """``(offset, category, first lemma, definition)`` of each synset line of a WordNet ``data.noun``."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: WordNet noun data not found (apt-get install wordnet-base, or give its folder)")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.startswith("  ") or not line.strip():       # the license header
                continue
            head, bar, gloss = line.partition(" | ")
            parts = head.split()
            try:
                category = NOUN_CATEGORIES[int(parts[1])]
                int(parts[3], 16)
            except (IndexError, ValueError, KeyError):
                raise DataError(f"{path}:{number}: not a WordNet noun synset line") from None
            if not bar or parts[2] != "n":
                raise DataError(f"{path}:{number}: not a WordNet noun synset line")
            definition = gloss.split('; "')[0].strip().rstrip(";").strip()
            yield parts[0], category, parts[4].replace("_", " "), definition


def split_of(offset: str) -> str:
    bucket = zlib.crc32(offset.encode()) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def build_records(data_noun: str, labels: Sequence[str], max_per_label: int = 0) -> Dict[str, List[dict]]:
    """Records of the categories ``labels`` by split, at most ``max_per_label`` per label and split (0: all)."""
    unknown = [label for label in labels if label not in NOUN_CATEGORIES.values()]
    if unknown:
        raise DataError(f"unknown WordNet noun category {unknown[0]!r}; known: "
                        f"{', '.join(sorted(NOUN_CATEGORIES.values()))}")
    groups: Dict[Tuple[str, str], List[Tuple[int, dict]]] = defaultdict(list)
    for offset, category, word, definition in read_noun_synsets(data_noun):
        if category in labels and definition:
            record = {"text": definition, "word": word, "label": category, "synset": offset}
            groups[split_of(offset), category].append((zlib.crc32(offset.encode()), record))
    out: Dict[str, List[dict]] = {split: [] for split in SPLITS}
    for (split, _), items in sorted(groups.items()):
        items.sort(key=lambda item: item[0])
        out[split].extend(r for _, r in (items[:max_per_label] if max_per_label else items))
    for split in SPLITS:
        out[split].sort(key=lambda r: zlib.crc32(r["synset"].encode()))   # labels interleaved
    return out


def task_yaml(name: str, verbalizer: Dict[str, str], pattern: str) -> str:
    """The YAML description of the converted task (data files next to it)."""
    lines = [f"name: {name}", "train: train.jsonl", "dev: dev.jsonl", "test: test.jsonl", "label_field: label",
             f"pattern: {json.dumps(pattern)}", "verbalizer:"]
    lines += [f"  {json.dumps(label)}: {json.dumps(word)}" for label, word in verbalizer.items()]
    lines.append("shorten: [text]")
    return "\n".join(lines) + "\n"


def write_task(out_dir: str, data_noun: str, verbalizer: Dict[str, str], max_per_label: int = 0,
               pattern: str = "{text} It is a kind of [MASK].", name: str = "wordnet-nouns") -> Dict[str, int]:
    """Write ``train/dev/test.jsonl`` and ``task.yaml`` into ``out_dir``; return the record count per split."""
    records = build_records(data_noun, list(verbalizer), max_per_label)
    os.makedirs(out_dir, exist_ok=True)
    for split, items in records.items():
        atomic_write_text(os.path.join(out_dir, f"{split}.jsonl"), "".join(json.dumps(r) + "\n" for r in items))
    atomic_write_text(os.path.join(out_dir, "task.yaml"), task_yaml(name, verbalizer, pattern))
    return {split: len(items) for split, items in records.items()}

"""The SuperGLUE tasks by name: GLM's pattern-verbalizer pairs and their jsonl readers.

``superglue_task(name, verbalizer=..., pattern=...)`` overrides GLM's choice, e.g. to use words
that are single tokens of a small vocabulary; ``read_superglue(name, path, train=...)`` reads one
split (``train`` matters to COPA, mirrored, and ReCoRD, one example per answer).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Union

from ..config.task import parse_pattern
from .superglue_choice import COPA, RECORD, WSC, read_copa, read_record, read_wsc
from .superglue_single import BOOLQ, CB, MULTIRC, RTE, WIC, read_boolq, read_cb, read_multirc, read_rte, read_wic
from .task import ClozeExample, ClozeTask

TASKS: Dict[str, ClozeTask] = {t.name: t for t in (BOOLQ, CB, COPA, RTE, WIC, WSC, MULTIRC, RECORD)}
# Epochs per task of the paper's stage 2 (docs/design.md, "The two stages").
EPOCHS = {"copa": 50, "rte": 50, "cb": 50, "wsc": 50, "boolq": 20, "wic": 30, "multirc": 15, "record": 5}


def superglue_task(name: str, verbalizer: Optional[Union[Sequence[str], Dict[str, str]]] = None,
                   pattern: Optional[str] = None) -> ClozeTask:
    """GLM's task ``name``, optionally with other verbalizer words (label order or label -> word) or another
    pattern (same fields, one [MASK])."""
    key = name.lower()
    if key not in TASKS:
        raise KeyError(f"unknown SuperGLUE task {name!r}; known: {', '.join(TASKS)}")
    task = TASKS[key]
    changes = {}
    if verbalizer is not None:
        if task.multi_token:
            raise ValueError(f"task {key} scores candidates; it has no verbalizer")
        words = tuple(verbalizer[label] for label in task.labels) if isinstance(verbalizer, dict) else tuple(verbalizer)
        if len(words) != len(task.labels):
            raise ValueError(f"task {key}: {len(words)} words for labels {task.labels}")
        changes["verbalizer"] = words
    if pattern is not None:
        pieces = parse_pattern(pattern, f"task {key}: pattern")
        fields = {p.value for p in pieces if p.kind == "field"}
        if fields != set(task.fields):
            raise ValueError(f"task {key}: the pattern must use the fields {sorted(task.fields)}, got {sorted(fields)}")
        changes["pattern"] = pieces
    return dataclasses.replace(task, **changes) if changes else task


def read_superglue(name: str, path: str, train: bool = False) -> List[ClozeExample]:
    key = name.lower()
    readers = {"boolq": read_boolq, "cb": read_cb, "rte": read_rte, "wic": read_wic, "multirc": read_multirc,
               "wsc": read_wsc, "copa": lambda p: read_copa(p, mirror=train),
               "record": lambda p: read_record(p, train=train)}
    if key not in readers:
        raise KeyError(f"unknown SuperGLUE task {name!r}; known: {', '.join(readers)}")
    return readers[key](path)

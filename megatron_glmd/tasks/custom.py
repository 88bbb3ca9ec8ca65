"""Your own classification task: a YAML description (:mod:`megatron_glmd.config.task`) and its data files.

Every line of a data file must hold each field the pattern uses; on a labelled split (train, dev)
the label field too, with a label of the verbalizer. Errors name the file, the line and the field
(data) or the YAML file, the line and the key (description), on one line.
"""
from __future__ import annotations

from typing import List

from ..config.task import TaskConfig, load_task_config
from .records import label_index, read_records, text_field
from .task import ClozeExample, ClozeTask, make_task


def task_from_config(cfg: TaskConfig) -> ClozeTask:
    """The cloze task of a validated description (accuracy and macro-F1 as its metrics)."""
    return make_task(cfg.name, cfg.pattern, cfg.labels, [word for _, word in cfg.verbalizer],
                     shorten=cfg.shortenable, metrics=("accuracy", "f1_macro"),
                     where=[cfg.where(f"verbalizer.{label}") for label in cfg.labels])


def load_task(path: str) -> ClozeTask:
    return task_from_config(load_task_config(path))


def read_task_file(cfg: TaskConfig, path: str, labelled: bool = True) -> List[ClozeExample]:
    """The examples of one data file of the task; ``labelled=False`` lets lines go without a label."""
    task_fields = cfg.fields
    out = []
    for where, record in read_records(path):
        fields = {name: text_field(where, record, name) for name in task_fields}
        label = label_index(where, record, cfg.label_field, cfg.labels, required=labelled)
        out.append(ClozeExample(where, fields, label=label, target=label))
    return out


def read_split(cfg: TaskConfig, split: str) -> List[ClozeExample]:
    """``train``, ``dev`` or ``test`` as the description names them (test lines may go unlabelled)."""
    return read_task_file(cfg, cfg.split_path(split), labelled=split != "test")

"""A classification task of your own, described in YAML, typed and validated (docs/design.md, "The two stages").

    name: wordnet-nouns
    train: wn/train.jsonl            # jsonl (one JSON object a line) or tsv (a header row names the columns);
    dev: wn/dev.jsonl                #   relative paths are relative to this YAML file's folder
    test: wn/test.jsonl              # optional, like train and dev
    label_field: label               # the field that holds the label (default: label)
    pattern: "{text} This is about [MASK]."   # {field} placeholders, exactly one [MASK]
    verbalizer:                      # label -> one word, in label order; each word must be one token
      animal: animal
      plant: plant
    shorten: [text]                  # fields that may be cut to fit the sequence (default: every field)

Labels are compared as text: a JSON ``true`` is ``true``, a number is written as in the file.
Verbalizer labels and words are read as YAML wrote them (``no: no`` is the label "no" and the
word "no", not booleans). Every error names the YAML file, the line of the key and the key.
The pattern's pieces (:func:`parse_pattern`) are what the tasks package renders and encodes.
Standard library and PyYAML only: no torch.
"""
from __future__ import annotations

import os
import string
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .base import ConfigError

MASK = "[MASK]"
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv"}
KEYS = ("name", "train", "dev", "test", "label_field", "pattern", "verbalizer", "shorten")


@dataclass(frozen=True)
class PatternPiece:
    """One piece of a pattern: literal ``text``, a ``field`` placeholder (value = its name), or the ``mask``."""

    kind: str
    value: str = ""


def parse_pattern(pattern: str, where: str = "pattern") -> Tuple[PatternPiece, ...]:
    """Split ``pattern`` into text / field / mask pieces; ConfigError (prefixed by ``where``) unless it has
    exactly one [MASK] and every placeholder is a plain ``{name}`` (``{{`` and ``}}`` are literal braces)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"{where}: the pattern must be a non-empty string")
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise ConfigError(f"{where}: {e} in {pattern!r}") from None
    pieces: List[PatternPiece] = []
    for literal, field, spec, conversion in parsed:
        chunks = literal.split(MASK)
        for i, chunk in enumerate(chunks):
            if i:
                pieces.append(PatternPiece("mask"))
            if chunk:
                pieces.append(PatternPiece("text", chunk))
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ConfigError(f"{where}: placeholder {{{field}{'!' + conversion if conversion else ''}"
                              f"{':' + spec if spec else ''}}} must be a plain {{name}} in {pattern!r}")
        pieces.append(PatternPiece("field", field))
    masks = sum(p.kind == "mask" for p in pieces)
    if masks != 1:
        raise ConfigError(f"{where}: the pattern must hold exactly one {MASK}, found {masks} in {pattern!r}")
    return tuple(pieces)


@dataclass(frozen=True)
class TaskConfig:
    """A YAML-described cloze classification task (see the module docstring for the layout)."""

    name: str
    pattern: str
    verbalizer: Tuple[Tuple[str, str], ...]      # (label, word) in label order
    train: str = ""
    dev: str = ""
    test: str = ""
    label_field: str = "label"
    shorten: Optional[Tuple[str, ...]] = None    # None: every pattern field may be shortened
    source: str = "<task>"                       # the YAML file, for messages
    lines: Tuple[Tuple[str, int], ...] = ()      # YAML line of each key ("pattern", "verbalizer.animal", ...)

    def where(self, key: str) -> str:
        """``FILE:LINE: key`` for an error message about ``key`` (``verbalizer.LABEL`` for an entry)."""
        line = dict(self.lines).get(key) or dict(self.lines).get(key.split(".")[0])
        return f"{self.source}:{line}: {key}" if line else f"{self.source}: {key}"

    @property
    def pieces(self) -> Tuple[PatternPiece, ...]:
        return parse_pattern(self.pattern, self.where("pattern"))

    @property
    def fields(self) -> Tuple[str, ...]:
        """Pattern fields in order of first use."""
        return tuple(dict.fromkeys(p.value for p in self.pieces if p.kind == "field"))

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(label for label, _ in self.verbalizer)

    @property
    def shortenable(self) -> Tuple[str, ...]:
        return self.fields if self.shorten is None else self.shorten

    def split_path(self, split: str) -> str:
        path = getattr(self, split, "") if split in ("train", "dev", "test") else ""
        if not path:
            raise ConfigError(f"{self.where(split)}: task {self.name!r} names no {split} file")
        return path

    def validate(self) -> "TaskConfig":
        if not self.name.strip():
            raise ConfigError(f"{self.where('name')}: must be a non-empty string")
        fields = self.fields                      # parses the pattern: one [MASK], plain placeholders
        if self.label_field in fields:
            raise ConfigError(f"{self.where('pattern')}: uses the label field {{{self.label_field}}}")
        if len(self.verbalizer) < 2:
            raise ConfigError(f"{self.where('verbalizer')}: needs at least two labels, got {len(self.verbalizer)}")
        for label, word in self.verbalizer:
            if not word.strip() or len(word.split()) != 1:
                raise ConfigError(f"{self.where('verbalizer.' + label)}: label {label!r} needs one word, "
                                  f"got {word!r}")
        for name in self.shorten or ():
            if name not in fields:
                raise ConfigError(f"{self.where('shorten')}: {name!r} is not a field of the pattern "
                                  f"({', '.join(fields) or 'none'})")
        for split in ("train", "dev", "test"):
            path = getattr(self, split)
            if path and os.path.splitext(path)[1].lower() not in FORMATS:
                raise ConfigError(f"{self.where(split)}: {path} must end in .jsonl, .json or .tsv")
        return self


def data_format(path: str) -> str:
    """``jsonl`` or ``tsv`` from a data file's extension."""
    return FORMATS.get(os.path.splitext(path)[1].lower(), "jsonl")


def _scalar(node, where: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"{where}: expected a single value, got a {node.id}")
    return node.value


def task_config_from_yaml(text: str, source: str = "<task>") -> TaskConfig:
    """Parse and validate a task description; keys are checked against the nodes so that each error
    names its line."""
    import yaml

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{source}: expected a mapping of task keys")
    lines: Dict[str, int] = {}
    values: Dict[str, Any] = {}
    for key_node, value_node in root.value:
        key = _scalar(key_node, f"{source}:{key_node.start_mark.line + 1}")
        at = f"{source}:{key_node.start_mark.line + 1}: {key}"
        lines[key] = key_node.start_mark.line + 1
        if key not in KEYS:
            raise ConfigError(f"{at}: unknown task key; known keys: {', '.join(KEYS)}")
        if key == "verbalizer":
            if not isinstance(value_node, yaml.MappingNode):
                raise ConfigError(f"{at}: expected a mapping label -> word")
            entries = []
            for k, v in value_node.value:
                label = _scalar(k, f"{source}:{k.start_mark.line + 1}: verbalizer")
                lines[f"verbalizer.{label}"] = k.start_mark.line + 1
                entries.append((label, _scalar(v, f"{source}:{k.start_mark.line + 1}: verbalizer.{label}").strip()))
            if len({label for label, _ in entries}) != len(entries):
                raise ConfigError(f"{at}: a label is listed twice")
            values[key] = tuple(entries)
        elif key == "shorten":
            if not isinstance(value_node, yaml.SequenceNode):
                raise ConfigError(f"{at}: expected a list of field names")
            values[key] = tuple(_scalar(item, at) for item in value_node.value)
        else:
            values[key] = _scalar(value_node, at)
    for key in ("name", "pattern", "verbalizer"):
        if key not in values:
            raise ConfigError(f"{source}: missing required task key {key!r}")
    base = os.path.dirname(os.path.abspath(source)) if os.path.exists(source) else ""
    for split in ("train", "dev", "test"):
        if values.get(split) and base and not os.path.isabs(values[split]):
            values[split] = os.path.join(base, values[split])
    return TaskConfig(source=source, lines=tuple(lines.items()), **values).validate()


def load_task_config(path: str) -> TaskConfig:
    """The task described by the YAML file ``path``; ConfigError naming the file, line and key."""
    if not os.path.isfile(path):
        raise ConfigError(f"task file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        return task_config_from_yaml(f.read(), source=path)

"""Records of a task data file, one per line, and their fields, with errors that name the place.

A jsonl file holds one JSON object a line (blank lines are skipped); a tsv file starts with a header
row naming its columns (csv's ``excel-tab`` dialect). Each record comes with ``FILE:LINE``, and
:func:`field` / :func:`text_field` / :func:`label_text` raise a one-line DataError
``FILE:LINE: field 'NAME': ...`` when a field is missing or of the wrong kind.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterator, List, Tuple

from ..data.errors import DataError


def _open(path: str):
    if not os.path.isfile(path):
        raise DataError(f"{path}: task data file does not exist")
    return open(path, encoding="utf-8", newline="")


def read_jsonl(path: str) -> Iterator[Tuple[str, dict]]:
    """``(FILE:LINE, object)`` for each non-blank line of a jsonl file."""
    with _open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not a JSON object ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield f"{path}:{number}", record


def read_tsv(path: str) -> Iterator[Tuple[str, dict]]:
    """``(FILE:LINE, row)`` for each row of a tsv file with a header row."""
    with _open(path) as f:
        reader = csv.reader(f, dialect="excel-tab")
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}:1: empty file; a tsv task file starts with a header row naming its columns")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(row)} columns, the header has {len(header)}")
            yield f"{path}:{reader.line_num}", dict(zip(header, row))


def read_records(path: str) -> Iterator[Tuple[str, dict]]:
    """jsonl or tsv by the file's extension (``.tsv`` is tsv, anything else jsonl)."""
    return read_tsv(path) if path.lower().endswith(".tsv") else read_jsonl(path)


_MISSING = object()


def field(where: str, record: dict, name: str, default: Any = _MISSING, prefix: str = "") -> Any:
    """``record[a][b]...`` for a dotted ``name``; DataError naming ``where`` and ``prefix + name`` if absent."""
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            if default is not _MISSING:
                return default
            raise DataError(f"{where}: field {prefix + name!r}: missing")
        value = value[part]
    return value


def _wrong(where: str, name: str, expected: str, value: Any) -> DataError:
    return DataError(f"{where}: field {name!r}: expected {expected}, got {json.dumps(value)[:40]}")


def text_field(where: str, record: dict, name: str, prefix: str = "") -> str:
    value = field(where, record, name, prefix=prefix)
    if not isinstance(value, str):
        raise _wrong(where, prefix + name, "text", value)
    return value


def int_field(where: str, record: dict, name: str, prefix: str = "") -> int:
    value = field(where, record, name, prefix=prefix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(where, prefix + name, "an integer", value)
    return value


def object_list(where: str, record: dict, name: str, prefix: str = "") -> List[Tuple[str, dict]]:
    """``(prefix, object)`` for each object of the list ``record[name]``; the prefix (``name[i].``)
    names the item's fields in messages."""
    value = field(where, record, name, prefix=prefix)
    if not isinstance(value, list):
        raise _wrong(where, prefix + name, "a list", value)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _wrong(where, f"{prefix}{name}[{i}]", "an object", item)
        out.append((f"{prefix}{name}[{i}].", item))
    return out


def label_text(value: Any) -> str:
    """A label as text: JSON booleans as ``true``/``false``, numbers as written, text as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TypeError(type(value).__name__)


def label_index(where: str, record: dict, name: str, labels, required: bool = False, prefix: str = "") -> int:
    """Index of ``record[name]`` among ``labels``; -1 when it is absent and not ``required`` (a test split)."""
    value = field(where, record, name, _MISSING if required else None, prefix=prefix)
    if value is None:
        return -1
    try:
        text = label_text(value)
    except TypeError:
        raise _wrong(where, prefix + name, "a label", value) from None
    if text not in labels:
        raise DataError(f"{where}: field {prefix + name!r}: label {text!r} is not one of "
                        f"{', '.join(map(repr, labels))}")
    return list(labels).index(text)


def standardize_punctuation(text: str) -> str:
    """Curly quotes to straight ones and en dashes to hyphens, as GLM's readers do."""
    for curly, plain in (("\u201c", '"'), ("\u201d", '"'), ("\u2019", "'"), ("\u2018", "'"), ("\u2013", "-")):
        text = text.replace(curly, plain)
    return text

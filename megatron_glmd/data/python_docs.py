"""A small real-English corpus from text that ships with the Python interpreter.

Sources: the pydoc topic help (``pydoc_data.topics``: Python's reference documentation as plain
text) and the docstrings of the standard library's own source files, read with ``ast`` (nothing
is imported or executed). Nothing is downloaded and nothing third-party is copied into the
repository: the text is read from the running interpreter's installation at run time.
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
import sysconfig
from typing import Iterator, List, Tuple

from ..atomic_io import atomic_write_text


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        block = " ".join(line.strip() for line in block.strip().splitlines())
        if len(block) >= 80 and sum(c.isalpha() for c in block) > 0.6 * len(block):
            yield block


def _docstrings(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def python_documents(max_bytes: int = 4_000_000) -> List[str]:
    """Paragraph-sized English documents from the interpreter's bundled documentation."""
    import pydoc_data.topics

    docs: List[str] = []
    for key in sorted(pydoc_data.topics.topics):
        docs.extend(_paragraphs(pydoc_data.topics.topics[key]))
    stdlib = sysconfig.get_paths()["stdlib"]
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "site-packages", "idlelib", "__pycache__"))
        for name in sorted(files):
            if name.endswith(".py"):
                for doc in _docstrings(os.path.join(root, name)):
                    docs.extend(_paragraphs(doc))
    out, total = [], 0
    for doc in dict.fromkeys(docs):  # de-duplicate, keep order
        out.append(doc)
        total += len(doc)
        if total >= max_bytes:
            break
    return out


def split_documents(docs: List[str], valid_fraction: float = 0.05) -> Tuple[List[str], List[str]]:
    """A deterministic held-out split by content hash."""
    threshold = int(valid_fraction * 2**32)
    train, valid = [], []
    for doc in docs:
        (valid if int(hashlib.md5(doc.encode()).hexdigest()[:8], 16) < threshold else train).append(doc)
    return train, valid


def write_corpus(docs: List[str], path: str) -> None:
    """One document per blank-line-separated block (the preprocessing tool's plain-text format)."""
    atomic_write_text(path, "\n\n".join(docs) + "\n")

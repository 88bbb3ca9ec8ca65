"""Writes that matter are atomic: built under a temporary name beside the target, then renamed.

A reader (or a run resumed after a crash) sees either the previous state or the complete new one,
never a half-written file or directory. ``os.replace`` is atomic within one file system, which a
sibling temporary name guarantees.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_directory(target: str, replace: bool = False) -> Iterator[str]:
    """Yield a fresh temporary directory beside ``target``; when the block ends without an error it
    is renamed to ``target``, else it is removed.

    An existing empty ``target`` is taken over; an existing non-empty one is swapped out and removed
    when ``replace``, else the rename fails (callers check and refuse before doing the work)."""
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    old = os.path.join(parent, f".{name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        if replace and os.path.exists(target):
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str, text: str) -> None:
    """Replace the file ``path`` with ``text`` (UTF-8), flushed to disk before the rename."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` through a temporary name."""
    import torch

    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)

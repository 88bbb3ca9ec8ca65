"""Slurm host lists (``gpu[01-03,07],login1``), expanded like ``scontrol show hostnames``.

Standard library only: the Slurm script calls this where ``scontrol`` is absent, before any torch.
"""
from __future__ import annotations

import itertools
import re
from typing import List

from . import PlanError


def expand_nodelist(nodelist: str) -> List[str]:
    """Expand a Slurm hostlist (``gpu[01-03,07],login1``, ``r[1-2]n[1-2]``) like ``scontrol show hostnames``."""
    items, depth, current = [], 0, ""
    for ch in nodelist.strip():
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    hosts: List[str] = []
    for item in items:
        if not item or depth != 0:
            raise PlanError(f"cannot parse Slurm node list {nodelist!r}")
        parts = re.split(r"(\[[^\]]*\])", item)
        choices = [_expand_brackets(p, nodelist) if p.startswith("[") else [p] for p in parts]
        hosts.extend("".join(c) for c in itertools.product(*choices))
    return hosts


def _expand_brackets(group: str, nodelist: str) -> List[str]:
    out = []
    for rng in group[1:-1].split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", rng)
        if not m:
            raise PlanError(f"cannot parse range {rng!r} in Slurm node list {nodelist!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        out.extend(str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1))
    return out

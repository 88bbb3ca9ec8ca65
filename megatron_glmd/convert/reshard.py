"""Re-lay a megatron-glmd checkpoint out for another tensor- and pipeline-parallel size.

The model weights are read whole (:func:`.glmd_checkpoint.read_checkpoint`) and written at the new
layout; they come out bit-identical. Optimizer state, RNG states and the data position are not
carried over: a resharded checkpoint serves as a teacher (``teacher_checkpoint``), as the source
of an export, or as the weights of a new run, not as a run to resume.
"""
from __future__ import annotations

import glob
import os
from typing import Optional

from .glmd_checkpoint import LATEST_FILE, read_checkpoint, read_model_config, write_checkpoint


def reshard_checkpoint(source: str, target: str, tp: int, pp: int, tag: Optional[str] = None) -> str:
    """Write ``source`` (a megatron-glmd checkpoint) to ``target`` at TP=``tp``, PP=``pp``; returns a summary."""
    _, old_tp, old_pp = read_model_config(source)
    config, state = read_checkpoint(source, tag)
    if tag is None:
        with open(os.path.join(source, LATEST_FILE), encoding="utf-8") as f:
            tag = f.read().strip()
    write_checkpoint(target, config, state, tp, pp)
    dropped = bool(glob.glob(os.path.join(source, tag, "*optim_states.pt")))
    lines = [f"read {source} ({tag}): TP={old_tp}, PP={old_pp}, {sum(v.numel() for v in state.values()):,} "
             f"parameters, vocabulary {config.vocab_size}",
             f"wrote {target} for TP={tp}, PP={pp} ({tp * pp} files)"]
    if dropped:
        lines.append("note: optimizer state, RNG states and the data position were not carried over (model "
                     "weights only): use the result as a teacher_checkpoint or to export, not to resume")
    return "\n".join(lines)

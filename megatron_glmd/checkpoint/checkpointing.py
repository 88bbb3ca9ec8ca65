"""Checkpoints: DeepSpeed engine state + this project's per-rank train state, published atomically.

Layout of ``save_dir``::

    config.yaml              the run's resolved configuration
    latest                   name of the newest complete checkpoint (replaced atomically)
    iter_0000100/            DeepSpeed's files (per-stage model layers, ZeRO-1 optimizer shards,
                             scheduler) and train_state_rank{r}.pt (RNG states, iteration)

A checkpoint is written to ``iter_XXXXXXX.partial`` and renamed once every rank has finished, then
``latest`` is replaced: a crash while saving leaves the previous checkpoint loadable.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from ..atomic_io import atomic_torch_save, atomic_write_text
from ..config import ConfigError
from ..parallel.random import get_rng_tracker
from .safe_load import safe_torch_load

LATEST = "latest"
CONFIG = "config.yaml"
_LAYER_FILE = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt$")
_TAG = re.compile(r"iter_\d{7}")


def tag_for(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def published_tags(save_dir: str) -> List[str]:
    """The complete checkpoints of ``save_dir`` (published by rename, so never half-written), oldest first."""
    if not os.path.isdir(save_dir):
        return []
    return sorted(d for d in os.listdir(save_dir) if _TAG.fullmatch(d) and os.path.isdir(os.path.join(save_dir, d)))


def other_checkpoints(save_dir: str, damaged: Optional[str] = None) -> str:
    """Where to resume from instead of a damaged checkpoint: the newest complete others."""
    tags = [t for t in published_tags(save_dir) if t != damaged]
    if not tags:
        return "no complete checkpoint is left in it"
    return f"complete checkpoints: {', '.join(tags[-3:])}; resume from one with --set checkpoint.load_tag={tags[-1]}"


def latest_tag(save_dir: str) -> Optional[str]:
    """The checkpoint named by ``save_dir/latest`` (None when there is no such file)."""
    path = os.path.join(save_dir, LATEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        tag = f.read().strip()
    if not tag:
        raise ConfigError(f"{path}: empty (damaged); {other_checkpoints(save_dir)}")
    if not os.path.isdir(os.path.join(save_dir, tag)):
        raise ConfigError(f"{path}: names checkpoint {tag!r}, which does not exist; {other_checkpoints(save_dir)}")
    return tag


def resume_tag(save_dir: str, load_tag: Optional[str] = None) -> Optional[str]:
    """The checkpoint a run resumes from: ``checkpoint.load_tag`` when given, else ``latest``."""
    if load_tag is not None:
        if not os.path.isdir(os.path.join(save_dir, load_tag)):
            raise ConfigError(f"checkpoint.load_tag: no checkpoint {load_tag!r} in {save_dir}; "
                              f"{other_checkpoints(save_dir)}")
        return load_tag
    return latest_tag(save_dir)


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "tracker": get_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_rng_tracker().set_states(state["tracker"])


def prune_checkpoints(save_dir: str, keep_last: int) -> list:
    """Delete all but the newest ``keep_last`` published checkpoints; returns the removed tags."""
    tags = published_tags(save_dir)
    removed = tags[:-keep_last] if keep_last > 0 else []
    for tag in removed:
        shutil.rmtree(os.path.join(save_dir, tag), ignore_errors=True)
    return removed


def save_checkpoint(engine, save_dir: str, iteration: int, train_state: Dict[str, Any], config_yaml: str,
                    keep_last: Optional[int] = None) -> str:
    """Save on every rank (collective); returns the published tag. With ``keep_last``, older
    checkpoints are deleted after the new one is published."""
    tag = tag_for(iteration)
    partial = f"{tag}.partial"
    rank = dist.get_rank()
    if rank == 0:
        os.makedirs(save_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(save_dir, "*.partial")):    # a save cut short
            shutil.rmtree(stale, ignore_errors=True)
        for stale in glob.glob(os.path.join(save_dir, "*.tmp.*")):       # an atomic write cut short
            os.remove(stale)
    dist.barrier()
    engine.save_checkpoint(save_dir, tag=partial, save_latest=False)
    atomic_torch_save(train_state, os.path.join(save_dir, partial, f"train_state_rank{rank}.pt"))
    dist.barrier()
    if rank == 0:
        final = os.path.join(save_dir, tag)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(os.path.join(save_dir, partial), final)
        atomic_write_text(os.path.join(save_dir, CONFIG), config_yaml)
        atomic_write_text(os.path.join(save_dir, LATEST), tag)
        if keep_last:
            prune_checkpoints(save_dir, keep_last)
    dist.barrier()
    return tag


def load_train_state(save_dir: str, tag: str) -> Dict[str, Any]:
    path = os.path.join(save_dir, tag, f"train_state_rank{dist.get_rank()}.pt")
    if not os.path.exists(path):
        ranks = [int(re.search(r"rank(\d+)\.pt$", p).group(1))
                 for p in glob.glob(os.path.join(save_dir, tag, "train_state_rank*.pt"))]
        world = dist.get_world_size()
        if ranks and max(ranks) + 1 != world:
            raise ConfigError(f"{path} is missing: the checkpoint was written by {max(ranks) + 1} ranks, "
                              f"this run has {world}")
        raise ConfigError(f"{path} is missing (deleted?); {other_checkpoints(save_dir, damaged=tag)}")
    return safe_torch_load(path)


def saved_run_config(save_dir: str):
    """The RunConfig stored beside a run's checkpoints."""
    from ..config import load_run_config

    path = os.path.join(save_dir, CONFIG)
    if not os.path.exists(path):
        raise ConfigError(f"{path} is missing: {save_dir} is not a megatron-glmd checkpoint directory")
    return load_run_config(path)


def load_stage_weights(module: torch.nn.Module, save_dir: str, prefix: str, tp_rank: int) -> None:
    """Load the ``prefix``-named weights of a saved pipeline run into ``module`` (any PP layout).

    Parameter names carry global layer indices, so the weights a stage needs are collected from
    all of the saved stages' files of this TP rank.
    """
    tag = latest_tag(save_dir)
    if tag is None:
        raise ConfigError(f"{save_dir} has no '{LATEST}' file: no complete checkpoint to load")
    files = [f for f in glob.glob(os.path.join(save_dir, tag, "layer_*-model_states.pt"))
             if int(_LAYER_FILE.search(f).group(2)) == tp_rank]
    if not files:
        raise ConfigError(f"{os.path.join(save_dir, tag)} holds no model-state files for TP rank {tp_rank}")
    available: Dict[str, torch.Tensor] = {}
    for path in sorted(files):
        # mmap: only the tensors this stage needs are read from disk.
        for key, value in safe_torch_load(path, mmap=True).items():
            if key.startswith(prefix):
                available[key[len(prefix):]] = (value, path)
    own = module.state_dict()
    for key, target in own.items():
        if key not in available:
            raise ConfigError(f"{os.path.join(save_dir, tag)}: no saved weight {prefix}{key} for this stage")
        value, path = available[key]
        if value.shape != target.shape:
            raise ConfigError(f"{path}: {prefix}{key} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
        target.copy_(value)

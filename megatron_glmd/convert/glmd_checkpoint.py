"""megatron-glmd model checkpoints (what a ``pretrain`` run saves), read into and written from one
unsplit state dict.

On disk (the files :func:`megatron_glmd.checkpoint.checkpointing.load_stage_weights` reads)::

    SAVE_DIR/config.yaml                 a run configuration: mode, model (every ModelConfig field), parallel
    SAVE_DIR/latest                      the tag of the checkpoint
    SAVE_DIR/<tag>/layer_{stage:02d}-model_{tp_rank:02d}-model_states.pt
                                         {"student.<GLMStage parameter name>": tensor}, global layer indices
    SAVE_DIR/vocab_compression/          a compressed student's vocabulary-compression artifact (its
                                         rows are the artifact's kept ids; inputs map through its token_map)

In memory the state dict is the unsplit (TP = 1, PP = 1) model under GLMStage's names, without the
``student.`` prefix, with exactly ``vocab_size`` word-embedding rows. Which tensors a stage holds
and along which dimension a TP rank's slice is cut are read off a GLMStage built on the ``meta``
device (:func:`stage_parameter_names`, :func:`full_shapes`), so this module follows the model and
its pipeline partition instead of restating them. The vocabulary padding of a file is
``pad_vocab_size(vocab_size, tp)`` (a multiple of 128·TP); padded rows are written as zeros and
dropped on reading. The fused ``attention.qkv`` rows are laid out [head, q|k|v, head_dim], so a
contiguous split by rows gives each TP rank whole heads: no re-ordering is needed between TP sizes.

Files are read with ``torch.load(weights_only=True)``: no pickled code runs. Optimizer state is
neither read nor written.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Dict, List, Optional, Tuple

import torch
import yaml

from ..config import ConfigError, ModelConfig, load_run_config, pad_vocab_size, run_config_from_dict
from ..atomic_io import atomic_directory
from .errors import ConvertError

CONFIG_FILE = "config.yaml"
LATEST_FILE = "latest"
VOCAB_COMPRESSION_DIR = "vocab_compression"
DEFAULT_TAG = "iter_0000000"
PREFIX = "student."
EMBEDDING = "word_embeddings.weight"
_LAYER_FILE = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt")

StateDict = Dict[str, torch.Tensor]


def layer_file(stage: int, tp_rank: int) -> str:
    """Name of the file of pipeline stage ``stage`` and TP rank ``tp_rank`` (DeepSpeed's naming)."""
    return f"layer_{stage:02d}-model_{tp_rank:02d}-model_states.pt"


def _meta_stage(config: ModelConfig, pp: int, pp_rank: int, layer_range: Optional[Tuple[int, int]] = None):
    """The stage a run builds, without memory. With ``layer_range=None`` the model's own pipeline
    partition chooses the layers (the one place this module decides a layer range)."""
    from ..model import GLMStage

    return GLMStage(config, pp_rank=pp_rank, pp_size=pp, layer_range=layer_range, device="meta")


def stage_parameter_names(config: ModelConfig, pp: int, pp_rank: int,
                          layer_range: Optional[Tuple[int, int]] = None) -> List[str]:
    """Parameter names held by pipeline stage ``pp_rank`` of ``pp`` (global layer indices)."""
    return list(_meta_stage(config, pp, pp_rank, layer_range).state_dict())


def full_shapes(config: ModelConfig) -> Dict[str, Tuple[Tuple[int, ...], Optional[int]]]:
    """``name -> (unsplit shape, TP split dimension or None)``; the embedding has ``vocab_size`` rows."""
    shapes = {}
    for name, param in _meta_stage(config, 1, 0).named_parameters():
        shape = list(param.shape)
        if name == EMBEDDING:
            shape[0] = config.vocab_size
        shapes[name] = (tuple(shape), getattr(param, "tp_shard", (None,))[0])
    return shapes


def check_state_dict(config: ModelConfig, state: StateDict, where: str) -> None:
    """Raise ConvertError naming the first missing, unexpected or wrongly shaped key."""
    shapes = full_shapes(config)
    for name in state:
        if name not in shapes:
            raise ConvertError(where, f"unexpected key {name!r} (not a parameter of this GLM)")
    for name, (shape, _) in shapes.items():
        if name not in state:
            raise ConvertError(where, f"missing key {name!r}")
        if tuple(state[name].shape) != shape:
            raise ConvertError(where, f"{name} has shape {tuple(state[name].shape)}, expected {shape}")


def split_for_tp(config: ModelConfig, name: str, tensor: torch.Tensor, split_dim: Optional[int],
                 tp: int) -> List[torch.Tensor]:
    """The ``tp`` slices of an unsplit tensor, as TP ranks 0..tp-1 hold them (each its own storage)."""
    if split_dim is None:
        return [tensor.clone() for _ in range(tp)]
    if name == EMBEDDING:
        padded = tensor.new_zeros((pad_vocab_size(config.vocab_size, tp), tensor.shape[1]))
        padded[:config.vocab_size] = tensor
        tensor = padded
    return [piece.clone() for piece in tensor.chunk(tp, dim=split_dim)]


def merge_tp(config: ModelConfig, name: str, shards: List[torch.Tensor], split_dim: Optional[int]) -> torch.Tensor:
    """Inverse of :func:`split_for_tp`: replicated tensors are taken from rank 0."""
    if split_dim is None:
        return shards[0]
    merged = torch.cat(shards, dim=split_dim)
    return merged[:config.vocab_size] if name == EMBEDDING else merged


def _config_text(config: ModelConfig, tp: int, pp: int) -> str:
    run = run_config_from_dict({"mode": "pretrain", "model": dataclasses.asdict(config),
                                "parallel": {"tp": tp, "pp": pp},
                                "data": {"train_prefix": "none (model weights only)"}})
    return yaml.safe_dump(run.to_dict(), sort_keys=False)


def write_checkpoint(save_dir: str, model_config: ModelConfig, state_dict: StateDict, tp: int = 1, pp: int = 1,
                     tag: str = DEFAULT_TAG, layer_ranges: Optional[List[Tuple[int, int]]] = None) -> str:
    """Write ``state_dict`` (unsplit, GLMStage names) as a checkpoint for a run at TP=``tp``, PP=``pp``.

    ``layer_ranges`` (one ``[start, end)`` per stage) overrides the model's default pipeline
    partition; the engine's teacher loader reads the files at any partition either way.

    Everything is written into a sibling temporary directory that is renamed to ``save_dir`` once
    complete (``latest`` last), so a failure leaves no partial checkpoint. ``save_dir`` must not
    exist or be empty. Returns ``save_dir``.
    """
    try:
        model_config.validate(tp_size=tp, pp_size=pp)
    except ConfigError as e:
        raise ConvertError(save_dir, f"cannot lay the model out at TP={tp}, PP={pp}: {e}") from None
    check_state_dict(model_config, state_dict, "state dict")
    if os.path.exists(save_dir) and (not os.path.isdir(save_dir) or os.listdir(save_dir)):
        raise ConvertError(save_dir, "already exists and is not empty; choose a new output directory")
    with atomic_directory(save_dir) as tmp:
        os.makedirs(os.path.join(tmp, tag))
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(_config_text(model_config, tp, pp))
        shapes = full_shapes(model_config)
        for stage in range(pp):
            names = stage_parameter_names(model_config, pp, stage, layer_ranges[stage] if layer_ranges else None)
            files: List[StateDict] = [{} for _ in range(tp)]
            for name in names:
                pieces = split_for_tp(model_config, name, state_dict[name], shapes[name][1], tp)
                for rank, piece in enumerate(pieces):
                    files[rank][PREFIX + name] = piece
            for rank, content in enumerate(files):
                torch.save(content, os.path.join(tmp, tag, layer_file(stage, rank)))
        with open(os.path.join(tmp, LATEST_FILE), "w", encoding="utf-8") as f:
            f.write(tag)
    return save_dir


def load_weights_file(path: str) -> StateDict:
    """``torch.load(weights_only=True)`` of a flat ``{str: Tensor}`` file; ConvertError otherwise."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise ConvertError(path, "missing") from None
    except Exception as e:  # noqa: BLE001 - pickle payloads, truncated files, not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConvertError(path, f"not a weights-only torch file ({first})") from None
    if not isinstance(content, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in content.items()):
        raise ConvertError(path, "does not hold a flat {name: tensor} state dict")
    return content


def read_model_config(save_dir: str) -> Tuple[ModelConfig, int, int]:
    """(model config, TP, PP) from ``save_dir/config.yaml``."""
    path = os.path.join(save_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConvertError(path, "missing: not a megatron-glmd checkpoint directory")
    try:
        run = load_run_config(path)
    except ConfigError as e:
        raise ConvertError(path, str(e)) from None
    return run.model, run.parallel.tp, run.parallel.pp


def read_checkpoint(save_dir: str, tag: Optional[str] = None) -> Tuple[ModelConfig, StateDict]:
    """The model config and the unsplit state dict (GLMStage names, ``vocab_size`` rows) of a checkpoint."""
    config, tp, pp = read_model_config(save_dir)
    if tag is None:
        latest = os.path.join(save_dir, LATEST_FILE)
        if not os.path.isfile(latest):
            raise ConvertError(latest, "missing: no complete checkpoint in this directory")
        with open(latest, encoding="utf-8") as f:
            tag = f.read().strip()
    folder = os.path.join(save_dir, tag)
    if not os.path.isdir(folder):
        raise ConvertError(folder, "missing checkpoint directory")
    found = {m.groups() for m in (_LAYER_FILE.fullmatch(os.path.basename(p))
                                  for p in glob.glob(os.path.join(folder, "layer_*"))) if m}
    extra = sorted(f"layer {s}, TP rank {r}" for s, r in found if int(s) >= pp or int(r) >= tp)
    if extra:
        raise ConvertError(folder, f"holds files for {extra[0]}, but config.yaml says TP={tp}, PP={pp}")
    shapes = full_shapes(config)
    # Any pipeline partition: each parameter is held by exactly one stage's files, except the tied
    # word embedding (and its factorisation), which the last stage of a PP > 1 run holds a copy of.
    tied = set(stage_parameter_names(config, pp, 0)) & set(stage_parameter_names(config, pp, pp - 1))
    shards: Dict[str, List[Optional[torch.Tensor]]] = {}
    owner: Dict[str, int] = {}
    for stage in range(pp):
        for rank in range(tp):
            path = os.path.join(folder, layer_file(stage, rank))
            for key, value in load_weights_file(path).items():
                name = key[len(PREFIX):] if key.startswith(PREFIX) else None
                if name not in shapes:
                    raise ConvertError(path, f"unexpected key {key!r}")
                want = _shard_shape(config, name, shapes[name], tp)
                if tuple(value.shape) != want:
                    raise ConvertError(path, f"{key} has shape {tuple(value.shape)}, expected {want}")
                if owner.setdefault(name, stage) != stage:
                    if name in tied:
                        continue
                    raise ConvertError(path, f"{key} is also held by stage {owner[name]}'s files")
                shards.setdefault(name, [None] * tp)[rank] = value
    for name in shapes:
        for rank, value in enumerate(shards.get(name, [None] * tp)):
            if value is None:
                raise ConvertError(folder, f"no file holds {PREFIX + name!r} for TP rank {rank}")
    state = {name: merge_tp(config, name, shards[name], split_dim) for name, (_, split_dim) in shapes.items()}
    return config, state


def _shard_shape(config: ModelConfig, name: str, full: Tuple[Tuple[int, ...], Optional[int]], tp: int):
    shape, split_dim = list(full[0]), full[1]
    if name == EMBEDDING:
        shape[0] = pad_vocab_size(config.vocab_size, tp)
    if split_dim is not None:
        shape[split_dim] //= tp
    return tuple(shape)

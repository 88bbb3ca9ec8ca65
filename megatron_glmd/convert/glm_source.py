"""Read a released GLM checkpoint into one whole state dict with GLM's (unprefixed) keys.

Two layouts (docs/design.md, "The model"):

* **THUDM's Megatron layout**: ``DIR/<iteration>/mp_rank_XX_model_states.pt`` (the iteration
  named by ``DIR/latest_checkpointed_iteration.txt``, an integer or ``release``), or a folder
  that holds the shards itself. Each shard is ``{"module": state_dict, ...}``. Model-parallel
  rank r holds rows r of the word embedding, of ``dense_h_to_4h`` (weight and bias) and of the
  fused QKV *with stride 3* (``[Q_r; K_r; V_r]``), and columns r of ``attention.dense.weight`` and
  ``dense_4h_to_h.weight``; everything else is replicated, and must agree across shards.
* **The Hugging Face hub layout**: ``pytorch_model.bin`` or ``model.safetensors`` (or a sharded
  ``*.index.json`` naming several files), keys with or without the ``glm.`` prefix, and a
  ``config.json`` that gives the head count.

Nothing is unpickled beyond tensors and plain data: ``torch.load(weights_only=True)`` (with
argparse namespaces and numpy arrays, which Megatron checkpoints carry beside the weights,
allowed as data) or safetensors.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List

import torch

from .errors import ConvertError

TRACKER = "latest_checkpointed_iteration.txt"
_SHARD = re.compile(r"mp_rank_(\d+)_model_states\.pt")
_HUB_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json", "model.safetensors",
              "pytorch_model.bin")
StateDict = Dict[str, torch.Tensor]


@dataclass
class GLMSource:
    """A GLM checkpoint read whole: GLM's keys, tensors as stored."""

    format: str                                   # "megatron" or "hub"
    path: str
    files: List[str]
    state: StateDict
    hub_config: Dict = field(default_factory=dict)

    @property
    def shards(self) -> int:
        return len(self.files)


def _safe_globals() -> list:
    """Plain-data types Megatron checkpoints pickle beside the weights (arguments, numpy RNG states)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "uint32", "uint8",
                                          "bool")]
    # Pickles written under numpy 1 name numpy.core, under numpy 2 numpy._core.
    return [argparse.Namespace, np.ndarray, np.dtype, reconstruct,
            (reconstruct, "numpy.core.multiarray._reconstruct"),
            (reconstruct, "numpy._core.multiarray._reconstruct")] + dtypes


def torch_load_weights(path: str):
    """``torch.load`` that runs no pickled code; a ConvertError naming ``path`` otherwise."""
    if not os.path.isfile(path):
        raise ConvertError(path, "missing")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle payloads, truncated or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConvertError(path, f"not a weights-only torch file ({first})") from None


def _tensor_dict(content, path: str) -> StateDict:
    if isinstance(content, dict) and isinstance(content.get("module"), dict):
        content = content["module"]
    if not isinstance(content, dict) or not content:
        raise ConvertError(path, "holds no state dict (expected {'module': {name: tensor}} or {name: tensor})")
    for key, value in content.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConvertError(path, f"entry {key!r} is not a tensor: not a GLM state dict")
    return dict(content)


def _split_rule(key: str):
    """(dim, stride) of GLM's model-parallel split of ``key``, or None when replicated."""
    if "attention.query_key_value." in key:
        return 0, 3
    if key == "word_embeddings.weight" or "mlp.dense_h_to_4h." in key:
        return 0, 1
    if key.endswith("attention.dense.weight") or key.endswith("mlp.dense_4h_to_h.weight"):
        return 1, 1
    return None


def merge_megatron_shards(shards: List[StateDict], files: List[str]) -> StateDict:
    """Undo GLM's model-parallel split (see the module docstring)."""
    keys = set(shards[0])
    for shard, path in zip(shards[1:], files[1:]):
        if set(shard) != keys:
            odd = sorted(set(shard) ^ keys)[0]
            raise ConvertError(path, f"key {odd!r} differs from {os.path.basename(files[0])}: "
                                     "a shard of another checkpoint?")
    merged = {}
    for key in shards[0]:
        rule = _split_rule(key)
        pieces = [s[key] for s in shards]
        for piece, path in zip(pieces[1:], files[1:]):
            if piece.shape != pieces[0].shape:
                raise ConvertError(path, f"{key} has shape {tuple(piece.shape)}, {os.path.basename(files[0])} "
                                         f"{tuple(pieces[0].shape)}: a shard of another checkpoint?")
        if rule is None:
            for piece, path in zip(pieces[1:], files[1:]):
                if not torch.equal(piece, pieces[0]):
                    raise ConvertError(path, f"replicated {key} differs from {os.path.basename(files[0])}'s: "
                                             "a shard of another checkpoint?")
            merged[key] = pieces[0]
        else:
            dim, stride = rule
            parts = [p.chunk(stride, dim=dim) for p in pieces]
            merged[key] = torch.cat([part[j] for j in range(stride) for part in parts], dim=dim)
    return merged


def _megatron_folder(path: str) -> str:
    if os.path.isfile(path) and _SHARD.fullmatch(os.path.basename(path)):
        return os.path.dirname(path) or "."
    tracker = os.path.join(path, TRACKER)
    if os.path.isfile(tracker):
        with open(tracker, encoding="utf-8") as f:
            tag = f.read().strip()
        folder = os.path.join(path, tag)
        if not os.path.isdir(folder):
            raise ConvertError(tracker, f"names iteration {tag!r}, but {folder} does not exist")
        return folder
    return path


def read_megatron(path: str) -> GLMSource:
    folder = _megatron_folder(path)
    found = {int(m.group(1)): os.path.join(folder, m.group(0))
             for m in (_SHARD.fullmatch(os.path.basename(p)) for p in glob.glob(os.path.join(folder, "mp_rank_*")))
             if m}
    if not found:
        raise ConvertError(folder, "holds no mp_rank_XX_model_states.pt shards")
    first = torch_load_weights(found[min(found)])
    # Megatron records the model-parallel size in every shard: it finds a missing last shard too.
    world = first.get("mp_world_size") if isinstance(first, dict) else None
    count = max(max(found) + 1, world if isinstance(world, int) else 0)
    files = [found.get(r, os.path.join(folder, f"mp_rank_{r:02d}_model_states.pt")) for r in range(count)]
    for rank, file in enumerate(files):
        if rank not in found:
            raise ConvertError(file, f"missing: shard {rank} of {count} (model-parallel size "
                                     f"{'mp_world_size=' + str(world) if world == count else 'from the shard names'})")
    shards = [_tensor_dict(first if r == 0 else torch_load_weights(f), f) for r, f in enumerate(files)]
    return GLMSource("megatron", path, files, merge_megatron_shards(shards, files))


def _load_hub_file(path: str) -> StateDict:
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise ConvertError(path, "missing")
        try:
            from safetensors.torch import load_file
            return load_file(path)
        except Exception as e:  # noqa: BLE001 - a corrupt header or a foreign file
            raise ConvertError(path, f"not a safetensors file ({str(e).strip().splitlines()[0]})") from None
    return _tensor_dict(torch_load_weights(path), path)


def read_hub(path: str) -> GLMSource:
    folder, name = (os.path.dirname(path) or ".", os.path.basename(path)) if os.path.isfile(path) else (path, None)
    if name is None:
        name = next((f for f in _HUB_FILES if os.path.isfile(os.path.join(folder, f))), None)
        if name is None:
            raise ConvertError(path, f"holds none of {', '.join(_HUB_FILES)} and no mp_rank_XX shards")
    main = os.path.join(folder, name)
    if name.endswith(".index.json"):
        try:
            with open(main, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ConvertError(main, f"not a sharded-checkpoint index ({e})") from None
        files = sorted({os.path.join(folder, v) for v in weight_map.values()})
        state: StateDict = {}
        for file in files:
            content = _load_hub_file(file)
            for key, value in content.items():
                if weight_map.get(key) != os.path.basename(file):
                    raise ConvertError(file, f"holds {key!r}, which {name} does not assign to it")
                state[key] = value
        absent = sorted(set(weight_map) - set(state))
        if absent:
            raise ConvertError(os.path.join(folder, weight_map[absent[0]]), f"does not hold {absent[0]!r}")
    else:
        files, state = [main], _load_hub_file(main)
    config_path = os.path.join(folder, "config.json")
    hub_config = {}
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                hub_config = json.load(f)
        except ValueError as e:
            raise ConvertError(config_path, f"not JSON ({e})") from None
    return GLMSource("hub", path, files, strip_prefix(state, files[0]), hub_config)


def strip_prefix(state: StateDict, where: str, prefix: str = "glm.") -> StateDict:
    out = {}
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        if name in out:
            raise ConvertError(where, f"holds both {name!r} and {prefix + name!r}")
        out[name] = value
    return out


def read_glm_source(path: str) -> GLMSource:
    """Read THUDM's Megatron layout or the hub layout, whichever ``path`` holds."""
    if not os.path.exists(path):
        raise ConvertError(path, "does not exist")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.yaml")) and glob.glob(
            os.path.join(path, "*", "layer_*-model_states.pt")):
        raise ConvertError(path, "is already a megatron-glmd checkpoint; use tools/reshard_checkpoint.py to "
                                 "change its layout")
    folder = _megatron_folder(path) if os.path.isdir(path) or _SHARD.fullmatch(os.path.basename(path)) else None
    if folder and glob.glob(os.path.join(folder, "mp_rank_*_model_states.pt")):
        return read_megatron(path)
    return read_hub(path)

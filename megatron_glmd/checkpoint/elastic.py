"""Resuming at another data-parallel size: the ZeRO-1 optimizer state re-partitioned in memory.

DeepSpeed refuses to load ZeRO optimizer shards written at another DP size. Its own remedy, the
universal checkpoint (``ds_to_universal.py`` + ``"load_universal": true``), does not fit this
engine: the conversion expects Megatron-DeepSpeed's files (it stops at "Cannot find layer_01*
files" on a pipeline of one DistillStage per stage, and wants ``args`` and a model-declared
``universal_checkpoint_info``), and both the conversion and the universal load call
``torch.load(weights_only=False)`` (ds_to_universal.py, base_optimizer.py,
universal_checkpoint.py), outside the trust boundary of :mod:`.safe_load`. ZeRO-1 state is simple
enough to re-partition here, and nothing needs to be written: the checkpoint is read, never changed.

How, on every rank (:func:`load_engine_checkpoint`):

- *Weights, LR schedule, step counters*: DeepSpeed's ``load_checkpoint`` without optimizer states
  (the layer and ``mp_rank`` files are written by DP rank 0 and do not depend on the DP size).
- *fp32 master weights and optimizer moments*: each saved DP shard of this rank's (PP, TP) slot is
  read in DP order (memory-mapped, :func:`.safe_load.safe_torch_load`); the pieces of a parameter
  follow one another over the shards (``param_slice_mappings``), so the offset of each piece in
  the whole parameter is known, and the part that this rank now owns is copied to the address that
  DeepSpeed's own low→high-precision mapping (``param._hp_mapping``) gives in the new partition.
  The result, shaped as a checkpoint of the new layout, goes through the optimizer's own
  ``load_state_dict`` (fp32: ``DeepSpeedZeroOptimizer``; bf16: ``BF16_Optimizer``). A rank reads at
  most one saved shard at a time. Adam's moments per element are exactly the saved ones.
- *Train state*: iteration and data position (global: ``consumed_samples``) are the same on every
  rank; the RNG states come from the saved rank of DP index 0 in the same (PP, TP) slot. All DP
  ranks of a slot are seeded alike (seed, TP rank, PP rank) and draw alike, so that is the state
  every old rank had. With dropout a sample's mask still differs across DP sizes (a rank draws per
  micro-batch), so only a run without dropout continues the old curve to fp32 rounding.

Refused before any work (:func:`check_dp_change`): fp16 (its loss-scaler state needs GPUs to test)
and a precision change made together with the DP change. A TP/PP change is refused by
:func:`.checkpoint_checks.check_compatible`, which names ``tools/reshard_checkpoint.py``.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, List

import torch

from ..config import ConfigError, RunConfig
from .checkpointing import load_train_state
from .safe_load import CheckpointError, safe_torch_load

_OPTIM_FILE = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt$")
ELASTIC_PRECISIONS = ("fp32", "bf16")   # checked by tests/distill/test_elastic_resume.py


def saved_dp_size(checkpoint_dir: str) -> int:
    """The DP size a checkpoint was written at: the number of ZeRO shards of its first (PP, TP) slot."""
    ranks = sorted(int(m.group(1)) for m in map(_OPTIM_FILE.match, os.listdir(checkpoint_dir)) if m)
    if not ranks or ranks != list(range(len(ranks))):
        raise CheckpointError(f"{checkpoint_dir}: incomplete checkpoint: ZeRO optimizer shards of DP ranks "
                              f"{ranks or 'none'} found for mp_rank_00")
    return len(ranks)


def check_dp_change(saved: RunConfig, current: RunConfig, checkpoint_dir: str, world_size: int) -> None:
    """Refuse, with one line, a DP change this module cannot carry out (called before any work)."""
    old_dp = saved_dp_size(checkpoint_dir)
    new_dp = world_size // (current.parallel.tp * current.parallel.pp)
    if old_dp == new_dp:
        return
    old, new = saved.train.precision, current.train.precision
    if old != new:
        raise ConfigError(f"{checkpoint_dir}: resuming at another data-parallel size ({old_dp} -> {new_dp}) "
                          f"keeps train.precision: the checkpoint is {old}, this run is {new}")
    if new not in ELASTIC_PRECISIONS:
        raise ConfigError(f"{checkpoint_dir}: resuming a {new} run at another data-parallel size ({old_dp} -> "
                          f"{new_dp}) is not supported (only {', '.join(ELASTIC_PRECISIONS)}): resume it at "
                          f"data-parallel size {old_dp} (world size {old_dp * current.parallel.tp * current.parallel.pp})")


def load_engine_checkpoint(engine, grid, save_dir: str, tag: str, log: Callable[[str], None] = print) -> Dict:
    """Load DeepSpeed's state of checkpoint ``tag`` into ``engine`` at any DP size (collective);
    returns this rank's train state (iteration, RNG states, loader position)."""
    checkpoint_dir = os.path.join(save_dir, tag)
    old_dp = saved_dp_size(checkpoint_dir)
    if old_dp == grid.dp_size:
        engine.load_checkpoint(save_dir, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
        return load_train_state(save_dir, tag)
    engine.load_checkpoint(save_dir, tag=tag, load_optimizer_states=False, load_lr_scheduler_states=True)
    paths = [engine._get_rank_zero_ckpt_name(save_dir, tag, engine.checkpoint_mp_rank, d, engine.bfloat16_enabled())
             for d in range(old_dp)]
    state = repartition(engine, paths)
    engine.optimizer.load_state_dict(state_dict_list=[state] * grid.dp_size, load_optimizer_states=True,
                                     load_from_fp32_weights=True)
    source = grid.pp_rank * old_dp * grid.tp_size + grid.tp_rank   # (pp, dp=0, tp) in the saved grid
    log(f"resuming at data-parallel size {grid.dp_size} from a checkpoint written at {old_dp}: ZeRO-1 optimizer "
        "state re-partitioned; RNG states of the saved DP rank 0")
    return train_state_of_rank(save_dir, tag, source)


def train_state_of_rank(save_dir: str, tag: str, rank: int) -> Dict:
    path = os.path.join(save_dir, tag, f"train_state_rank{rank}.pt")
    if not os.path.exists(path):
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
    return safe_torch_load(path)


def _flat_states(shard: Dict, group: int, path: str) -> Dict[str, torch.Tensor]:
    """The flat (partitioned) tensors of one saved param group: fp32 weights and every optimizer state
    of the partition's size; scalars (Adam's step) are left out."""
    fp32 = shard["single_partition_of_fp32_groups"][group]
    states = shard["base_optimizer_state"]["state"].get(group, {})
    flat = {k: v for k, v in states.items() if torch.is_tensor(v) and v.shape == fp32.shape}
    if set(states) - set(flat) - {"step"}:
        raise CheckpointError(f"{path}: optimizer state {sorted(set(states) - set(flat))} of param group {group} "
                              "is neither partitioned nor a step count: cannot re-partition it")
    return {"fp32": fp32, **flat}


def repartition(engine, paths: List[str]) -> Dict:
    """This rank's ZeRO optimizer state dict at the engine's DP size, cut from the shards ``paths``
    (the saved DP ranks of this rank's slot, in order)."""
    optimizer = engine.optimizer
    partitions = [group["params"][0] for group in optimizer.optimizer.param_groups]
    wanted = {}   # name -> (param, group, start in the param, numel, start in the new partition)
    for param, name in engine.param_names.items():
        mapping = getattr(param, "_hp_mapping", None)
        if mapping is not None:
            wanted[name] = (param, mapping.param_group_index, mapping.lp_fragment_address.start,
                            mapping.lp_fragment_address.numel, mapping.hp_fragment_address.start)
    new: List[Dict[str, torch.Tensor]] = []
    seen: Dict[str, int] = {}       # elements of each parameter found in the shards read so far
    first = None
    for path in paths:
        if not os.path.exists(path):
            raise CheckpointError(f"{path} is missing: the checkpoint is incomplete")
        shard = safe_torch_load(path, mmap=True)["optimizer_state_dict"]
        mappings = shard["param_slice_mappings"]
        if len(mappings) != len(partitions):
            raise CheckpointError(f"{path}: {len(mappings)} param groups, this run's optimizer has {len(partitions)}")
        if first is None:
            first = shard
            new = [{k: torch.zeros(p.numel(), dtype=v.dtype) for k, v in _flat_states(shard, g, path).items()}
                   for g, p in enumerate(partitions)]
        for group, mapping in enumerate(mappings):
            flat = _flat_states(shard, group, path)
            if set(flat) != set(new[group]) or not _same_step(shard, first, group):
                raise CheckpointError(f"{path}: optimizer state of param group {group} differs in kind or step "
                                      f"from {paths[0]}")
            for name, piece in mapping.items():
                lo = seen.get(name, 0)
                seen[name] = lo + piece.numel
                if name not in wanted:
                    continue
                param, g, start, numel, dest = wanted[name]
                if g != group:
                    raise CheckpointError(f"{path}: {name} is in param group {group}, this run has it in {g}")
                a, b = max(lo, start), min(lo + piece.numel, start + numel)
                for key, tensor in flat.items():
                    if a < b:
                        new[group][key][dest + a - start:dest + b - start] = tensor[piece.start + a - lo:
                                                                                    piece.start + b - lo]
        del shard
    missing = [n for n, (p, *_) in wanted.items() if seen.get(n) != p.numel()]
    if missing:
        raise CheckpointError(f"{os.path.dirname(paths[0])}: the optimizer shards hold {seen.get(missing[0], 0)} "
                              f"of the {wanted[missing[0]][0].numel()} elements of {missing[0]}"
                              + (f" (and {len(missing) - 1} more parameters)" if len(missing) > 1 else ""))
    base = first["base_optimizer_state"]
    state = {g: {**{k: v for k, v in base["state"].get(g, {}).items() if k == "step"},
                 **{k: v for k, v in new[g].items() if k != "fp32"}} for g in range(len(partitions))}
    # The old layout's paddings, partition counts and slice mappings do not describe this one: left out.
    out = {k: v for k, v in first.items() if k not in ("param_slice_mappings", "group_paddings", "partition_count")}
    out.update(base_optimizer_state={"state": state, "param_groups": base["param_groups"]},
               single_partition_of_fp32_groups=[new[g]["fp32"] for g in range(len(partitions))])
    if "param_alignment_paddings" in out:   # DeepSpeedZeroOptimizer checks its own layout against it
        out["param_alignment_paddings"] = optimizer.round_robin_bit16_padding
    return out


def _same_step(shard: Dict, first: Dict, group: int) -> bool:
    a = shard["base_optimizer_state"]["state"].get(group, {}).get("step")
    b = first["base_optimizer_state"]["state"].get(group, {}).get("step")
    return (a is None) == (b is None) and (a is None or float(a) == float(b))

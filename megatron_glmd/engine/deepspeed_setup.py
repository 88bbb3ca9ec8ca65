"""DeepSpeed set-up of a run: the process group, the engine, the pipeline's items.

Every collective of the engine runs on the process group joined here: NCCL on GPUs, gloo on the
CPU. NCCL serves CUDA tensors only, so everything a collective sees is created on the engine's
device (docs/design.md, "Communication rules").
"""
from __future__ import annotations

import os
import socket
import tempfile
from typing import Dict, Sequence

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..distill.objective import LABEL_KEYS
from .quiet import deepspeed_prints

INPUT_KEYS = ("input_ids", "position_ids", "sep", "length")   # what the first stage reads
DECODER_INPUT_KEYS = ("input_ids", "position_ids", "length")  # ... of the decoder family (causal samples)


def input_keys(model) -> Sequence[str]:
    """What the first stage of ``model``'s family (a ModelConfig) reads (engine/pipeline.py)."""
    return DECODER_INPUT_KEYS if model.is_decoder else INPUT_KEYS


def pipeline_item(batch: Dict[str, torch.Tensor], label_keys: Sequence[str] = LABEL_KEYS,
                  inputs: Sequence[str] = INPUT_KEYS):
    """(first-stage inputs, last-stage labels) of a collated micro-batch, as DeepSpeed's pipeline reads them;
    ``label_keys``: what the objective's loss reads (its ``label_keys``); ``inputs``: :func:`input_keys`."""
    return tuple(batch[k] for k in inputs), tuple(batch[k] for k in label_keys)


def init_distributed() -> None:
    """Join the process group described by the environment (torchrun, deepspeed, Slurm) or a 1-rank one.

    DeepSpeed's communication layer is attached to an already initialised torch process group.
    """
    import deepspeed

    if torch.cuda.is_available():
        # One device per rank, also when the caller created the process group: LOCAL_RANK indexes
        # the GPUs this process sees (launch/slurm_task.sh sets 0 where a task sees only its own).
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized() and "MASTER_PORT" not in os.environ and os.environ.get("WORLD_SIZE", "1") == "1":
        # A lone process meets nobody: a file rendezvous needs no port, so any number of
        # single-process runs share a machine without racing for one. MASTER_PORT still gets a
        # port nobody holds now: DeepSpeed's CPU shared-memory op names its segments after it.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
        store = os.path.join(tempfile.mkdtemp(prefix="glmd-rendezvous-"), "store")
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    for var, default in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500"), ("RANK", "0"),
                         ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(var, default)
    with deepspeed_prints():     # its CPU communication op says it was built
        deepspeed.init_distributed(dist_backend=dist.get_backend() if dist.is_initialized() else backend)


def build_engine(cfg: RunConfig, pipe, trained_modules, ds_config: dict):
    """``deepspeed.initialize`` over the pipeline module with the run's optimizer and schedule.

    Only ``trained_modules`` (the student's stage, the intermediate-loss projections) reach the
    optimizer; the co-located teacher is not a registered module and is never seen by DeepSpeed.
    """
    import deepspeed

    from .optim import build_optimizer, build_scheduler, param_groups
    from ..checkpoint.safe_load import make_loads_safe

    optimizer = build_optimizer(param_groups(trained_modules, cfg.optimizer.weight_decay), cfg.optimizer)
    engine, _, _, _ = deepspeed.initialize(model=pipe, optimizer=optimizer, config=ds_config,
                                           lr_scheduler=build_scheduler(cfg.optimizer, cfg.train.iterations))
    make_loads_safe(engine)   # resuming never unpickles code (DeepSpeed's own loader would)
    return engine


def engine_device() -> torch.device:
    """The device of this rank's model and of every tensor its collectives see."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def device_memory_gib() -> float:
    """This rank's GPU memory in GiB, the budget ``train.checkpoint_activations: auto`` is decided
    against (:mod:`megatron_glmd.plan.checkpointing`); 0 on the CPU (no budget)."""
    if not torch.cuda.is_available():
        return 0.0
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2 ** 30

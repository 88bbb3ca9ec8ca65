"""No host synchronisation inside a micro-batch, in every mode (docs/design.md, "No host
synchronisation inside a micro-batch").

One training step of each mode (pretrain, distill with the hard-label and intermediate-layer parts,
activation checkpointing and dropout, distill with a compressed vocabulary, finetune, task_distill, task_logits on a single-token task and
on COPA) at (TP, PP, DP) = (1, 1, 1) and (2, 1, 1), and the evaluation of distill and task_logits,
run with the pipeline engine's ForwardPass and BackwardPass instructions (the stage's forward, the
loss function, autograd's backward) under :func:`tests.host_sync.guard_micro_batches`: an
``.item()``, a boolean-mask index, a ``nonzero``, a device ``synchronize()`` ... there fails the run
with the operation and the line that issued it. The guard itself is checked first
against operations that do and do not synchronise.
"""
import os

import pytest
import torch

from megatron_glmd.config import run_config_from_dict
from megatron_glmd.convert.reshard import reshard_checkpoint
from megatron_glmd.engine.task_trainer import TaskTrainer
from megatron_glmd.engine.trainer import Trainer
from tests.distill.compressed_cases import build_artifact, compressed
from tests.distill.engine_cases import run_config, train_data, valid_data
from tests.distill.task_cases import make_tokenizer, task_config, write_copa, write_topic_task
from tests.distributed import run_distributed
from tests.host_sync import HostSyncError, SynchronizeGuard, guard_micro_batches, no_host_sync

LAYOUTS = [(1, 1, 1), (2, 1, 1)]     # (TP, PP, DP)


def _quiet(*args, **kwargs):
    pass


_X = torch.arange(-4.0, 8.0).reshape(3, 4)
_MASK = _X > 0
_IDS = torch.tensor([2, 0, 1])
SYNCING = {
    "item": lambda: _X.sum().item(), "float": lambda: float(_X.sum()), "bool": lambda: bool(_MASK.any()),
    "tolist": lambda: _IDS.tolist(), "mask index": lambda: _X[_MASK], "nonzero": lambda: _MASK.nonzero(),
    "mask assignment": lambda: _X.clone().__setitem__(_MASK, 0.0), "where(cond)": lambda: torch.where(_MASK),
    "masked_select": lambda: _X.masked_select(_MASK), "unique": lambda: _IDS.unique(),
    "repeat_interleave": lambda: torch.repeat_interleave(_IDS),
}
NOT_SYNCING = {
    "gather": lambda: _X.gather(1, _IDS.unsqueeze(1)), "where": lambda: torch.where(_MASK, _X, 0.0),
    "scatter_add_": lambda: _X.clone().scatter_add_(1, _IDS.unsqueeze(1), torch.ones(3, 1)),
    "integer index": lambda: _X[torch.arange(3), _IDS], "masked_fill": lambda: _X.masked_fill(_MASK, 0.0),
    "repeat_interleave(int)": lambda: _IDS.repeat_interleave(2),
}


@pytest.mark.parametrize("name", SYNCING)
def test_the_guard_fails_on_an_operation_that_synchronises(name):
    with pytest.raises(HostSyncError), no_host_sync():
        SYNCING[name]()


def test_the_guard_refuses_a_device_synchronize():
    from deepspeed.accelerator import get_accelerator

    with pytest.raises(HostSyncError), SynchronizeGuard():
        get_accelerator().synchronize()
    get_accelerator().synchronize()        # restored outside


@pytest.mark.parametrize("name", NOT_SYNCING)
def test_the_guard_lets_device_side_operations_run(name):
    with no_host_sync():
        NOT_SYNCING[name]()


def _step(trainer, evaluate=False):
    """One guarded training step (and, if asked, one guarded evaluation); the loss, finite."""
    with guard_micro_batches(trainer):
        record = trainer.train()[0]
        if evaluate:
            trainer.evaluate(iterations=1)
    assert torch.isfinite(torch.tensor(record["loss"])), record
    return record["loss"]


def _with(cfg, **sections):
    values = cfg.to_dict()
    for name, section in sections.items():
        values[name] = {**(values.get(name) or {}), **section}
    return run_config_from_dict(values)


def _every_mode(rank, world, tp, teacher, artifact, tok, topics, copa, workdir):
    d = lambda name: os.path.join(workdir, name)          # noqa: E731
    losses = {}
    losses["pretrain"] = _step(Trainer(run_config("pretrain", tp, 1, d("pretrain"), iterations=1), train_data(),
                                       log=_quiet))
    distill = _with(run_config("distill", tp, 1, d("distill"), teacher=teacher, iterations=1),
                    loss={"hard_label_weight": 0.5, "intermediate_weight": 0.5},
                    train={"checkpoint_activations": True},          # recompute in backward, dropout on the
                    model={"hidden_dropout": 0.1, "attention_dropout": 0.1})   # TP stream replayed
    losses["distill"] = _step(Trainer(distill, train_data(), valid_data(), log=_quiet), evaluate=True)
    losses["compressed distill"] = _step(Trainer(compressed(run_config("distill", tp, 1, d("compressed"),
                                                                       teacher=teacher, iterations=1), artifact),
                                                 train_data(), valid_data(), log=_quiet), evaluate=True)
    single, multi = {"file": topics}, {"name": "copa", "data_dir": copa, "num_choices": 3}
    run = lambda cfg, **kw: _step(TaskTrainer.from_config(cfg, log=_quiet), **kw)   # noqa: E731
    losses["finetune"] = run(task_config("finetune", tp, 1, tok, single, d("teacher"), iterations=1))
    losses["task_distill"] = run(task_config("task_distill", tp, 1, tok, multi, d("s2a"), teacher=d("teacher"),
                                             iterations=1))
    losses["task_logits"] = run(task_config("task_logits", tp, 1, tok, single, d("s2b"), teacher=d("teacher"),
                                            iterations=1), evaluate=True)
    losses["copa task_logits"] = run(task_config("task_logits", tp, 1, tok, multi, d("c2b"), teacher=d("teacher"),
                                                 iterations=1), evaluate=True)
    return losses


def _pretrain_teacher(rank, world, save_dir):
    Trainer(run_config("pretrain", 1, 1, save_dir, iterations=2), train_data(), log=_quiet).train()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("no_sync")
    teacher = str(root / "teacher")
    run_distributed(1, _pretrain_teacher, teacher)
    reshard_checkpoint(teacher, str(root / "teacher_tp2"), tp=2, pp=1)
    artifact = build_artifact(teacher, str(root / "artifact"), train_data(), 128)
    files = (make_tokenizer(str(root / "tok")), write_topic_task(str(root / "topics")), write_copa(str(root / "copa")))
    return root, {1: teacher, 2: str(root / "teacher_tp2")}, artifact, files


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_step_of_every_mode_has_no_host_sync_inside_a_micro_batch(inputs, layout):
    root, teachers, artifact, files = inputs
    tp, pp, dp = layout
    results = run_distributed(tp * pp * dp, _every_mode, tp, teachers[tp], artifact, *files,
                              str(root / f"tp{tp}pp{pp}dp{dp}"))
    assert set(results[0]) == {"pretrain", "distill", "compressed distill", "finetune", "task_distill",
                               "task_logits", "copa task_logits"}

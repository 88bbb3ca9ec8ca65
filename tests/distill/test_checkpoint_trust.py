"""Resuming never runs code from a checkpoint: a pickle payload in the train state or in one of
DeepSpeed's files is refused with an error naming the file, and the payload never runs."""
import builtins
import os

import pytest
import torch

from megatron_glmd.config import ConfigError
from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed


class _Payload:
    """Unpickling this creates a file: what an attacker's payload could do instead."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def _train(rank, world, save_dir, iterations):
    Trainer(run_config("pretrain", 1, 1, save_dir, iterations=iterations), train_data()).train()


def _resume_error(rank, world, save_dir):
    try:
        Trainer(run_config("pretrain", 1, 1, save_dir, iterations=3), train_data())
    except ConfigError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    save_dir = str(tmp_path_factory.mktemp("trust") / "run")
    run_distributed(1, _train, save_dir, 2)
    return save_dir


@pytest.mark.parametrize("victim", ["train_state_rank0.pt", "mp_rank_00_model_states.pt"])
def test_a_pickle_payload_is_refused_and_never_runs(trained, tmp_path, victim):
    path = os.path.join(trained, "iter_0000002", victim)
    original = open(path, "rb").read()
    marker = str(tmp_path / f"payload_ran_{victim}")
    state = torch.load(path, weights_only=False) if victim.startswith("train") else {}
    try:
        torch.save({**state, "extra": _Payload(marker)}, path)
        error = run_distributed(1, _resume_error, trained)[0]
    finally:
        with open(path, "wb") as f:
            f.write(original)
    assert not os.path.exists(marker), "the payload ran"
    assert error is not None and error.startswith(f"{path}: refused to load"), error
    assert "io.open" in error  # builtins.open pickles as io.open


def test_an_untampered_checkpoint_still_resumes(trained):
    assert run_distributed(1, _resume_error, trained)[0] is None


def test_a_truncated_file_is_named(trained):
    path = os.path.join(trained, "iter_0000002", "train_state_rank0.pt")
    original = open(path, "rb").read()
    try:
        with open(path, "wb") as f:
            f.write(original[: len(original) // 2])
        error = run_distributed(1, _resume_error, trained)[0]
    finally:
        with open(path, "wb") as f:
            f.write(original)
    assert error is not None and error.startswith(f"{path}: damaged or truncated checkpoint file"), error

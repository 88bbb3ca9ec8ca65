"""A stop signal saves and ends the run cleanly; a run can be extended by raising train.iterations."""
import os
import signal

from megatron_glmd.checkpoint import checkpointing as ckpt
from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed


def _train_and_signal_after(rank, world, save_dir, iterations, signal_after):
    trainer = Trainer(run_config("pretrain", 1, 1, save_dir, iterations=iterations), train_data())
    start = trainer.iteration
    step = trainer.train_step

    def step_then_signal():
        out = step()
        if trainer.iteration == signal_after and rank == 0:  # one rank's signal stops every rank
            os.kill(os.getpid(), signal.SIGUSR1)  # what Slurm sends before the time limit
        return out

    trainer.train_step = step_then_signal
    records = trainer.train()
    return start, trainer.iteration, [r["iteration"] for r in records], trainer.stopped_early


def test_signal_saves_and_stops_then_a_longer_run_resumes(tmp_path):
    save_dir = str(tmp_path / "run")
    for result in run_distributed(2, _train_and_signal_after, save_dir, 6, 2):
        assert result == (0, 2, [1, 2], True)
    assert ckpt.latest_tag(save_dir) == "iter_0000002"
    # Extending the run (train.iterations 6 -> 8) changes the training set's length: it resumes anyway.
    for result in run_distributed(2, _train_and_signal_after, save_dir, 8, -1):
        assert result == (2, 8, [3, 4, 5, 6, 7, 8], False)
    assert ckpt.latest_tag(save_dir) == "iter_0000008"


def test_prune_keeps_the_newest_published_checkpoints(tmp_path):
    for name in ("iter_0000002", "iter_0000004", "iter_0000010", "iter_0000012.partial", "tensorboard"):
        (tmp_path / name).mkdir()
    (tmp_path / "latest").write_text("iter_0000010")
    assert ckpt.prune_checkpoints(str(tmp_path), 2) == ["iter_0000002"]
    assert sorted(os.listdir(tmp_path)) == ["iter_0000004", "iter_0000010", "iter_0000012.partial", "latest",
                                            "tensorboard"]


def _train_keep_last(rank, world, save_dir):
    values = run_config("pretrain", 1, 1, save_dir, iterations=4).to_dict()
    values["checkpoint"].update(save_interval=1, keep_last=2)
    from megatron_glmd.config import run_config_from_dict
    Trainer(run_config_from_dict(values), train_data()).train()


def test_keep_last_during_training(tmp_path):
    save_dir = tmp_path / "run"
    run_distributed(1, _train_keep_last, str(save_dir))
    assert sorted(d for d in os.listdir(save_dir) if d.startswith("iter_")) == ["iter_0000003", "iter_0000004"]
    assert ckpt.latest_tag(str(save_dir)) == "iter_0000004"

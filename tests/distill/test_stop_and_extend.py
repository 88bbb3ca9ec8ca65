"""A stop signal saves and ends the run cleanly; a run can be extended by raising train.iterations."""
import os
import signal

from megatron_glmd.distill import checkpointing as ckpt
from megatron_glmd.distill.trainer import Trainer
from tests.distill.test_engine_layouts import run_config, train_data
from tests.distributed import run_distributed


def _train_and_signal_after(rank, world, save_dir, iterations, signal_after):
    trainer = Trainer(run_config("pretrain", 1, 1, save_dir, iterations=iterations), train_data())
    start = trainer.iteration
    step = trainer.train_step

    def step_then_signal():
        out = step()
        if trainer.iteration == signal_after:
            os.kill(os.getpid(), signal.SIGUSR1)  # what Slurm sends before the time limit
        return out

    trainer.train_step = step_then_signal
    records = trainer.train()
    return start, trainer.iteration, [r["iteration"] for r in records]


def test_signal_saves_and_stops_then_a_longer_run_resumes(tmp_path):
    save_dir = str(tmp_path / "run")
    start, end, iterations = run_distributed(2, _train_and_signal_after, save_dir, 6, 2)[0]
    assert (start, end, iterations) == (0, 2, [1, 2])
    assert ckpt.latest_tag(save_dir) == "iter_0000002"
    # Extending the run (train.iterations 6 -> 8) changes the training set's length: it resumes anyway.
    start, end, iterations = run_distributed(2, _train_and_signal_after, save_dir, 8, -1)[0]
    assert (start, end, iterations) == (2, 8, [3, 4, 5, 6, 7, 8])
    assert ckpt.latest_tag(save_dir) == "iter_0000008"

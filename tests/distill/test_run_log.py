"""After a crash, the iterations run again are written to TensorBoard once; a save clears the
temporary files an atomic write cut short."""
import dataclasses
import os

from megatron_glmd.checkpoint import checkpointing as ckpt
from megatron_glmd.engine.trainer import Trainer
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed


def _train(rank, world, save_dir, tb_dir):
    cfg = run_config("pretrain", 1, 1, save_dir, iterations=4)
    cfg = dataclasses.replace(cfg, checkpoint=dataclasses.replace(cfg.checkpoint, save_interval=2),
                              logging=dataclasses.replace(cfg.logging, log_interval=1, tensorboard_dir=tb_dir))
    Trainer(cfg, train_data()).train()


def _loss_steps(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tb_dir)
    events.Reload()
    return [e.step for e in events.Scalars("loss")]


def test_iterations_run_again_after_a_crash_are_logged_once(tmp_path):
    save_dir, tb_dir = str(tmp_path / "run"), str(tmp_path / "tb")
    run_distributed(1, _train, save_dir, tb_dir)
    assert _loss_steps(tb_dir) == [1, 2, 3, 4]
    # A crash after iteration 4 was logged but before its checkpoint was published: iterations 3 and 4
    # run again from iter_0000002, and a config.yaml write was cut short.
    os.rename(os.path.join(save_dir, "iter_0000004"), os.path.join(save_dir, "iter_0000004.partial"))
    (tmp_path / "run" / "latest").write_text("iter_0000002")
    (tmp_path / "run" / "config.yaml.tmp.4242").write_text("half")
    run_distributed(1, _train, save_dir, tb_dir)
    assert _loss_steps(tb_dir) == [1, 2, 3, 4]
    assert ckpt.latest_tag(save_dir) == "iter_0000004"
    assert not [f for f in os.listdir(save_dir) if ".tmp." in f or f.endswith(".partial")]

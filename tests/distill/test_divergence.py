"""A diverging run stops at the first non-finite step (or after the allowed skips), before saving,
with the newest good checkpoint intact even under keep_last pruning."""
import dataclasses
import os

import torch

from megatron_glmd.checkpoint import checkpointing as ckpt
from megatron_glmd.engine.trainer import Trainer, TrainingDiverged
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed


def _diverge(rank, world, save_dir, skip):
    cfg = run_config("pretrain", 1, 1, save_dir, iterations=10, skip_nonfinite_steps=skip)
    cfg = dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, lr=1e3, eps=1e-6),
                              checkpoint=dataclasses.replace(cfg.checkpoint, save_interval=1, keep_last=1))
    trainer = Trainer(cfg, train_data())
    try:
        trainer.train()
    except TrainingDiverged as e:
        return str(e), trainer.iteration, trainer.engine.skipped_steps
    return None, trainer.iteration, trainer.engine.skipped_steps


def _finite_checkpoint(save_dir):
    tag = ckpt.latest_tag(save_dir)
    files = [f for f in os.listdir(os.path.join(save_dir, tag)) if f.startswith("layer_")]
    return tag, all(torch.isfinite(v).all() for f in files
                    for v in torch.load(os.path.join(save_dir, tag, f), weights_only=True).values())


def test_divergence_stops_before_saving_and_keeps_the_last_good_checkpoint(tmp_path):
    save_dir = str(tmp_path / "run")
    for error, iteration, skipped in run_distributed(2, _diverge, save_dir, 0):  # DP = 2: both ranks agree
        assert error is not None and error.startswith(f"iteration {iteration}: non-finite grad_norm (inf)")
        assert f"the newest good checkpoint is {os.path.join(save_dir, ckpt.tag_for(iteration - 1))}" in error
        assert skipped == 1                      # DeepSpeed applied no step at the non-finite gradient
    tag, finite = _finite_checkpoint(save_dir)
    assert tag == ckpt.tag_for(iteration - 1) and finite
    assert sorted(d for d in os.listdir(save_dir) if d.startswith("iter_")) == [tag]  # nothing newer, pruned older


def test_skip_nonfinite_steps_allows_that_many_then_stops(tmp_path):
    save_dir = str(tmp_path / "run")
    error, iteration, skipped = run_distributed(1, _diverge, save_dir, 2)[0]
    # Two non-finite steps were skipped (no optimizer step; their checkpoints hold the unchanged, finite
    # weights), the third stopped the run before its save.
    assert error is not None and error.startswith(f"iteration {iteration}: non-finite") and skipped == 3
    tag, finite = _finite_checkpoint(save_dir)
    assert tag == ckpt.tag_for(iteration - 1) and finite

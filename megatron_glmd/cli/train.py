"""glmd-train: teacher pre-training or GLMD distillation from a run configuration.

    glmd-train --config run.yaml [--set train.iterations=1000 --set parallel.tp=2 ...]

The stage-2 task modes (finetune, task_distill, task_logits, evaluate; megatron_glmd/config/stage2.py)
end with the task's metrics on task.eval_split, printed and written as JSON.

Run one process per device (torchrun, ``deepspeed``, or srun with RANK/WORLD_SIZE/LOCAL_RANK/
MASTER_ADDR/MASTER_PORT set, as ``launch/`` does); a single process needs nothing set.

Exit status: 0 the run finished (then the held-out evaluation runs); 75 (EX_TEMPFAIL) it stopped
early on SIGUSR1/SIGTERM after saving a checkpoint, so running the same command again resumes it
(the Slurm script requeues on exactly this status); 2 bad input, before any work; 3 the loss or
gradient norm went non-finite (the run stopped before saving); other: a failure.
"""
from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from ..config.stage2 import TASK_MODES

EXIT_STOPPED_EARLY = 75   # sysexits.h EX_TEMPFAIL: "try again later" -- resume
EXIT_DIVERGED = 3         # a non-finite loss or gradient norm: nothing saved at or after it


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="glmd-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run configuration YAML")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one configuration value (repeatable)")
    args = parser.parse_args(argv)
    from ..data.errors import DataError

    try:
        from ..distill.data import build_datasets
        from ..config import load_run_config
        from ..engine.trainer import Trainer, TrainingDiverged

        cfg = load_run_config(args.config, args.set)
        if cfg.mode in TASK_MODES:
            from ..engine.task_trainer import TaskTrainer
            trainer, valid_data = TaskTrainer.from_config(cfg), None
        else:
            train_data, valid_data = build_datasets(cfg)
            trainer = Trainer(cfg, train_data, valid_data)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        trainer.train()
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    if trainer.stopped_early:
        trainer.log(f"stopped early at iteration {trainer.iteration} by a signal, after saving: run the same "
                    f"command to resume (exit status {EXIT_STOPPED_EARLY})")
        return EXIT_STOPPED_EARLY
    if cfg.mode in TASK_MODES:
        trainer.finish()
    elif valid_data is not None:
        metrics = trainer.evaluate()
        trainer.log("held-out: " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

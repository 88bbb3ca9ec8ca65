"""glmd-train as a subprocess on a small real corpus (the `dataset` fixture of conftest.py): a run config, the call."""
import os
import subprocess
import sys

import yaml

from megatron_glmd.data.tokenizer import GLMTokenizer

EXIT_STOPPED_EARLY = 75
# What DeepSpeed prints or logs by itself in a run (megatron_glmd/engine/quiet.py keeps them out unless
# logging.verbose): its accelerator warning, its CPU op build, PipelineModule's set-up report.
DEEPSPEED_LINES = ("[WARNING] [real_accelerator.py", "built successfully", "SEED_LAYERS=", "Using topology:",
                   "stage=0 layers=1", "0: DistillStage", "loss: loss")


def config(dataset, tokenizer_model, tmp_path, iterations):
    vocab = GLMTokenizer(tokenizer_model).vocab_size
    values = {
        "mode": "pretrain",
        "model": {"preset": "tiny-student", "vocab_size": vocab, "max_sequence_length": 64},
        "train": {"iterations": iterations, "micro_batch_size": 2, "global_batch_size": 4},
        "data": {"train_prefix": str(dataset / "train"), "valid_prefix": str(dataset / "valid"),
                 "tokenizer_model": tokenizer_model, "seq_length": 64},
        "checkpoint": {"save_dir": str(tmp_path / "run")},
        "logging": {"log_interval": 1, "eval_iters": 1, "progress_bar": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def train(config, *extra, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "megatron_glmd.cli.train", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)


def train_forked(config, *extra):
    """glmd-train in a process forked from tests/fork_server.py's server: a bad-input case is about the
    status and the lines, not the interpreter's start (a test about a whole process uses :func:`train`)."""
    from megatron_glmd.cli.train import main
    from tests.fork_server import run_forked

    return run_forked(main, ["--config", str(config), *extra])

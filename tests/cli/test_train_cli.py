"""glmd-train as users run it: a finished run, a stop by signal (exit 75, then resume), bad input."""
import os
import signal
import subprocess
import sys

import pytest
import yaml

from megatron_glmd.data.preprocess import preprocess
from megatron_glmd.data.tokenizer import GLMTokenizer
from tests.data.corpus import paragraphs

EXIT_STOPPED_EARLY = 75


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tokenizer_model):
    folder = tmp_path_factory.mktemp("train_cli")
    texts = paragraphs()
    for split, part in (("train", texts[:600]), ("valid", texts[600:700])):
        (folder / f"{split}.txt").write_text("\n\n".join(part), encoding="utf-8")
        preprocess([str(folder / f"{split}.txt")], str(folder / split), tokenizer_model, progress=False)
    return folder


def _config(dataset, tokenizer_model, tmp_path, iterations):
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


def _train(config, *extra, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "megatron_glmd.cli.train", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)


def test_a_finished_run_exits_0_and_reports_held_out_loss(dataset, tokenizer_model, tmp_path):
    proc = _train(_config(dataset, tokenizer_model, tmp_path, 3))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "held-out: student_loss" in out
    assert (tmp_path / "run" / "latest").read_text() == "iter_0000003"


def test_a_signal_saves_stops_with_status_75_and_the_same_command_resumes(dataset, tokenizer_model, tmp_path):
    config = _config(dataset, tokenizer_model, tmp_path, 200)
    proc = _train(config)
    for line in proc.stdout:               # wait for the first finished iteration
        if line.startswith("loss "):
            proc.send_signal(signal.SIGUSR1)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_STOPPED_EARLY, err[-3000:]
    assert "stopped early at iteration" in out and "held-out" not in out
    tag = (tmp_path / "run" / "latest").read_text()
    stopped_at = int(tag[len("iter_"):])
    assert 1 <= stopped_at < 200
    # The same command, with the run shortened so that it finishes soon, resumes where it stopped.
    proc = _train(config, "--set", f"train.iterations={stopped_at + 2}")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert f"resumed from {tmp_path / 'run' / tag} at iteration {stopped_at}" in out


def test_bad_input_is_one_error_line_and_status_2(dataset, tokenizer_model, tmp_path):
    config = _config(dataset, tokenizer_model, tmp_path, 3)
    proc = _train(config, "--set", "parallel.tp=3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ")
    assert "Traceback" not in err and not (tmp_path / "run").exists()

"""glmd-train as users run it: a finished run, a stop by signal (exit 75, then resume), bad input."""
import signal

from tests.cli.train_runs import EXIT_STOPPED_EARLY, config as _config, train as _train


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

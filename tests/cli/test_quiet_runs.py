"""Quiet runs (megatron_glmd/engine/quiet.py): a run prints its own lines only, unless
``logging.verbose: true`` asks for DeepSpeed's too; errors always reach the console."""
import logging

import pytest

from megatron_glmd.config import ConfigError, run_config_from_dict
from megatron_glmd.engine.quiet import deepspeed_prints, set_verbose
from tests.cli.train_runs import DEEPSPEED_LINES, config as _config, train as _train
from tests.distill.engine_cases import run_config, train_data
from tests.distributed import run_distributed

OWN_LINES = ("loss ", "saved checkpoint ", "held-out: ")
GATHER_WARNING = "FutureWarning: `torch.distributed.all_gather_into_tensor` is deprecated"


def test_glmd_train_prints_its_own_lines_only_unless_verbose(dataset, tokenizer_model, tmp_path):
    config = _config(dataset, tokenizer_model, tmp_path, 2)
    proc = _train(config)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    lines = out.splitlines()
    assert [line for line in lines if not line.startswith(OWN_LINES)] == [] and err == "", out + err
    assert sum(line.startswith("loss ") for line in lines) == 2 and "held-out: " in out
    proc = _train(config, "--set", "logging.verbose=true", "--set", f"checkpoint.save_dir={tmp_path / 'verbose'}")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert [line for line in DEEPSPEED_LINES if line not in out + err] == [], out + err
    assert sum(line.startswith("loss ") for line in out.splitlines()) == 2


def _dp2_run(rank, world, workdir, verbose):
    values = run_config("pretrain", 1, 1, workdir, iterations=1).to_dict()
    values["logging"]["verbose"] = verbose
    from megatron_glmd.engine.trainer import Trainer
    Trainer(run_config_from_dict(values), train_data()).train()


@pytest.mark.parametrize("verbose", [False, True])
def test_a_data_parallel_run_is_quiet_too(capfd, tmp_path, verbose):
    """Two DP ranks: ZeRO's parameter all-gather calls a deprecated torch.distributed function; its
    FutureWarning is DeepSpeed's, shown only when verbose (spawned ranks write to the captured fds)."""
    run_distributed(2, _dp2_run, str(tmp_path / "run"), verbose)
    out, err = capfd.readouterr()
    assert "saved checkpoint" in out and sum(line.startswith("loss ") for line in out.splitlines()) == 1
    shown = [line for line in DEEPSPEED_LINES + (GATHER_WARNING,) if line in out + err]
    assert shown == (list(DEEPSPEED_LINES) + [GATHER_WARNING] if verbose else []), out + err


def test_a_failing_deepspeed_call_keeps_what_it_printed_on_stderr(capsys):
    set_verbose(False)
    with pytest.raises(RuntimeError, match="the call failed"), deepspeed_prints():
        print("DeepSpeed's context before the failure")
        raise RuntimeError("the call failed")
    out, err = capsys.readouterr()
    assert out == "" and "DeepSpeed's context before the failure" in err
    with deepspeed_prints():
        print("swallowed")
    assert capsys.readouterr().out == ""


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_deepspeed_errors_pass_the_quiet_filter():
    import deepspeed  # noqa: F401  (creates its logger)

    logger, seen = logging.getLogger("DeepSpeed"), _Collect()
    logger.addHandler(seen)
    try:
        set_verbose(False)
        logger.warning("a DeepSpeed warning")
        logger.error("a DeepSpeed error")
        assert seen.messages == ["a DeepSpeed error"]
        set_verbose(True)
        logger.warning("a DeepSpeed warning")
        assert seen.messages == ["a DeepSpeed error", "a DeepSpeed warning"]
    finally:
        set_verbose(False)
        logger.removeHandler(seen)


def test_verbose_must_be_a_boolean():
    values = run_config("pretrain", 1, 1, None).to_dict()
    values["logging"]["verbose"] = "yes"
    with pytest.raises(ConfigError, match="verbose"):
        run_config_from_dict(values)

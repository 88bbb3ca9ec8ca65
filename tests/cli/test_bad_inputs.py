"""Every bad input a hostile user tried, one row each: the command stops with status 2 (the tools: 1)
and a single ``error:`` line naming the file or field, prints no traceback and writes nothing.

glmd-train's rows run as processes forked from tests/fork_server.py's server (torch and the project
imported once); a whole ``python -m megatron_glmd.cli.train`` process refuses a config that names a
directory."""
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from megatron_glmd.data.indexed_dataset import write_documents
from tests.cli.train_runs import config, train, train_forked

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _listing(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def _one_error_line(stderr, named):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    assert "Traceback" not in stderr
    assert named in lines[0], (named, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(dataset, tokenizer_model, tmp_path_factory):
    """A run with two complete checkpoints, copied afresh for each case that damages one."""
    folder = tmp_path_factory.mktemp("finished")
    proc = train(config(dataset, tokenizer_model, folder, 2), "--set", "checkpoint.save_interval=1")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return folder


def _other_vocabulary_data(tmp_path, dataset):
    write_documents(str(tmp_path / "other"), 5000, [[[4000, 4001, 4002, 17]]] * 40)
    return [f"data.train_prefix={tmp_path / 'other'}"]


def _glm_with_a_tokenizer_json(tmp_path, dataset):
    from tests.data.corpus import train_byte_level_bpe
    train_byte_level_bpe(tmp_path, 300, 50)
    return [f"data.tokenizer_model={tmp_path / 'tokenizer.json'}", "data.tokenizer_type=hf"]


# (case, --set overrides or a function building them, the name the error must contain)
TRAIN_CASES = [
    ("data of another tokenizer", _other_vocabulary_data, "data.train_prefix"),
    ("unparsable --set value", ["train.iterations=[1"], "--set train.iterations=[1"),
    ("model null", ["model=null"], "model"),
    ("model a number", ["model=5"], "model"),
    ("lr NaN", ["optimizer.lr=.nan"], "optimizer.lr"),
    ("lr inf", ["optimizer.lr=.inf"], "optimizer.lr"),
    ("eps 0", ["optimizer.eps=0"], "optimizer.eps"),
    ("beta1 1", ["optimizer.beta1=1.0"], "optimizer.beta1"),
    ("beta1 negative", ["optimizer.beta1=-0.1"], "optimizer.beta1"),
    ("clip_grad negative", ["optimizer.clip_grad=-1"], "optimizer.clip_grad"),
    ("log_interval 0", ["logging.log_interval=0"], "logging.log_interval"),
    ("eval_iters 0", ["logging.eval_iters=0"], "logging.eval_iters"),
    ("save_dir a file", lambda tmp_path, _: [f"checkpoint.save_dir={tmp_path / 'run.yaml'}"], "checkpoint.save_dir"),
    ("load_tag missing", ["checkpoint.load_tag=iter_0000009"], "checkpoint.load_tag"),
    ("tokenizer_type unknown", ["data.tokenizer_type=llama"], "data.tokenizer_type"),
    ("GLM with a plain tokenizer.json", _glm_with_a_tokenizer_json, "has no [MASK]/[CLS]/[sop] tokens"),
]


@pytest.mark.parametrize("case,sets,named", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_glmd_train_bad_input(case, sets, named, dataset, tokenizer_model, tmp_path):
    path = config(dataset, tokenizer_model, tmp_path, 3)
    if callable(sets):
        sets = sets(tmp_path, dataset)
    before = _listing(tmp_path)
    done = train_forked(path, *[arg for s in sets for arg in ("--set", s)])
    assert done.returncode == 2, done.stderr[-3000:]
    _one_error_line(done.stderr, named)
    assert _listing(tmp_path) == before


def test_glmd_train_config_naming_a_directory(tmp_path):
    proc = train(tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    _one_error_line(err, str(tmp_path))


def _empty_latest(run):
    (run / "latest").write_text("")
    return "latest"


def _truncated_model_file(run):
    path = run / "iter_0000002" / "mp_rank_00_model_states.pt"
    path.write_bytes(path.read_bytes()[:100])
    return "mp_rank_00_model_states.pt"


def _deleted_train_state(run):
    (run / "iter_0000002" / "train_state_rank0.pt").unlink()
    return "train_state_rank0.pt"


@pytest.mark.parametrize("damage", [_empty_latest, _truncated_model_file, _deleted_train_state])
def test_glmd_train_damaged_checkpoint(damage, finished_run, dataset, tokenizer_model, tmp_path):
    shutil.copytree(finished_run / "run", tmp_path / "run")
    named = damage(tmp_path / "run")
    before = _listing(tmp_path)
    done = train_forked(config(dataset, tokenizer_model, tmp_path, 4))
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_error_line(done.stderr, named)
    way_out = {_empty_latest: "iter_0000002", _deleted_train_state: "iter_0000001",
               _truncated_model_file: "iter_0000001"}[damage]
    assert line.endswith(f"--set checkpoint.load_tag={way_out}")  # the newest complete, undamaged checkpoint
    assert sorted(set(_listing(tmp_path)) - {"run.yaml"}) == before


def test_lr_written_as_1e_3_is_the_float_users_mean(tmp_path):
    from megatron_glmd.config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text("model: {preset: tiny-student}\ndata: {train_prefix: x}\noptimizer: {lr: 1e-3}\n")
    assert load_run_config(str(path)).optimizer.lr == 1e-3


def _tool(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_count_vocab_freq_non_utf8_protected_tokens(dataset, tokenizer_model, tmp_path):
    (tmp_path / "protected.txt").write_bytes(b"the\n\xff\xfe\n")
    before = _listing(tmp_path)
    done = _tool("count_vocab_freq.py", "--data-prefix", dataset / "train", "--tokenizer-model", tokenizer_model,
                 "--output", tmp_path / "freq.tsv", "--protected-tokens", tmp_path / "protected.txt")
    assert done.returncode == 1
    _one_error_line(done.stderr, f"{tmp_path / 'protected.txt'}:2: not UTF-8")
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("args,named", [(["--nproc", "0"], "--nproc"), (["--config", "no_such.yaml"], "--config")])
def test_distill_local_bad_arguments(args, named, tmp_path):
    done = subprocess.run(["bash", os.path.join(ROOT, "launch", "distill_local.sh"), "--cpu", "--dry-run", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    _one_error_line(done.stderr, named)


def test_distill_local_finds_a_config_relative_to_the_caller(tmp_path):
    values = yaml.safe_load(open(os.path.join(ROOT, "launch", "configs", "distill_local.yaml")))
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(values))
    done = subprocess.run(["bash", os.path.join(ROOT, "launch", "distill_local.sh"), "--cpu", "--dry-run",
                           "--nproc", "8", "--config", "mine.yaml", "--teacher-model", "glm-10b"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"--config {tmp_path / 'mine.yaml'}" in done.stdout


def test_a_bad_kernel_backend_variable_is_one_line_before_any_work(finished_run, dataset, tokenizer_model, tmp_path,
                                                                  monkeypatch):
    """GLMD_SOFTMAX_KL_BACKEND is read when the distillation objective is built, not at the first
    step: a wrong value stops start-up with one line naming the variable. The teacher: a copy of the
    finished run (a pre-trained tiny-student, the student's shape)."""
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    shutil.copytree(finished_run / "run", teacher / "run")
    student.mkdir()
    path = config(dataset, tokenizer_model, student, 2)
    sets = ["mode=distill", f"teacher_checkpoint={teacher / 'run'}"]
    monkeypatch.setenv("GLMD_SOFTMAX_KL_BACKEND", "cuda-please")
    done = train_forked(path, *[arg for s in sets for arg in ("--set", s)])
    assert done.returncode == 2, done.stderr[-3000:]
    _one_error_line(done.stderr, "GLMD_SOFTMAX_KL_BACKEND")
    assert "iteration" not in done.stdout

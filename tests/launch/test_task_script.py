"""launch/task_distill.sh: one command per task runs teacher fine-tune -> 2a -> 2b -> evaluate (torchrun
locally, srun under Slurm), skips phases whose runs are complete, and prints teacher vs student
metrics; its helper (megatron_glmd.cli.task_chain) decides completeness and writes the table."""
import json
import os
import shutil

import pytest
import yaml

from megatron_glmd.cli.task_chain import EPOCHS, report, run_complete
from megatron_glmd.tasks import EPOCHS as TASK_EPOCHS
from tests.launch.helpers import REPO, clean_env, run

SCRIPT = os.path.join(REPO, "launch", "task_distill.sh")


def _env(tmp_path, **extra):
    return clean_env(GLMD_TEACHER_INIT=str(tmp_path / "t"), GLMD_STUDENT_INIT=str(tmp_path / "s"),
                     GLMD_TASK_DATA=str(tmp_path / "RTE"), GLMD_TASK_OUT=str(tmp_path / "out"), **extra)


def _complete_run(folder, iterations=4, latest=4):
    os.makedirs(folder / f"iter_{latest:07d}")
    (folder / "config.yaml").write_text(yaml.safe_dump({"train": {"iterations": iterations}}), encoding="utf-8")
    (folder / "latest").write_text(f"iter_{latest:07d}", encoding="utf-8")


def _phases(stdout):
    return [line for line in stdout.splitlines() if line.startswith("== ")]


def test_dry_run_lists_the_phases_and_skips_complete_runs(tmp_path):
    _complete_run(tmp_path / "out" / "teacher")
    _complete_run(tmp_path / "out" / "student_2a", latest=2)          # stopped part-way: runs again (resumes)
    proc = run(SCRIPT, "RTE", "--cpu", "--dry-run", "--student-set", "optimizer.lr=1e-4", env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    phases = _phases(proc.stdout)
    assert [p.split(":")[0] for p in phases] == ["== teacher", "== student_2a", "== student_2b", "== eval_teacher",
                                                 "== eval_student"]
    assert "skipped" in phases[0]
    out = str(tmp_path / "out")
    student_2a, student_2b, eval_student = phases[1], phases[2], phases[4]
    for needed in ("torchrun", "megatron_glmd.cli.train", "mode=task_distill", "task.name=rte", "train.epochs=50",
                   f"init_checkpoint={tmp_path / 's'}", f"teacher_checkpoint={out}/teacher",
                   f"checkpoint.save_dir={out}/student_2a", "optimizer.lr=1e-4", "train.precision=fp32"):
        assert needed in student_2a, needed
    assert "mode=task_logits" in student_2b and f"init_checkpoint={out}/student_2a" in student_2b
    assert f"init_checkpoint={out}/student_2b" in eval_student and f"task.results={out}/eval_student.json" in eval_student
    assert "optimizer.lr=1e-4" not in phases[3] and proc.stdout.strip().endswith("dry run: nothing started")


def test_under_slurm_every_phase_is_an_srun_step(tmp_path):
    env = _env(tmp_path, SLURM_JOB_ID="77", SLURM_NNODES="2", SLURM_NTASKS="16", SLURM_JOB_NODELIST="gpu[1-2]")
    task = tmp_path / "mine.yaml"
    task.write_text("name: mine\n", encoding="utf-8")
    proc = run(SCRIPT, str(task), "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    for phase in _phases(proc.stdout):
        assert "srun --nodes=2 --ntasks=16 --ntasks-per-node=8" in phase and "launch/slurm_task.sh" in phase
        assert f"task.file={task}" in phase and "train.epochs" not in phase


@pytest.mark.parametrize("args,env_change,message", [
    ((), {}, "error: name a TASK"),
    (("RTE",), {"GLMD_STUDENT_INIT": ""}, "error: set GLMD_STUDENT_INIT"),
    (("RTE",), {"GLMD_TASK_DATA": ""}, "error: set GLMD_TASK_DATA"),
    (("missing.yaml",), {}, "error: task file missing.yaml does not exist"),
    (("RTE", "--frobnicate"), {}, "error: unknown argument '--frobnicate'"),
])
def test_bad_arguments_are_one_line(tmp_path, args, env_change, message):
    proc = run(SCRIPT, *args, "--cpu", "--dry-run", env={**_env(tmp_path), **env_change})
    assert proc.returncode == 2 and proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert proc.stderr.startswith(message), proc.stderr


def test_completeness_and_the_report(tmp_path):
    assert EPOCHS == TASK_EPOCHS
    _complete_run(tmp_path / "done")
    _complete_run(tmp_path / "partial", iterations=8)
    assert run_complete(str(tmp_path / "done")) and not run_complete(str(tmp_path / "partial"))
    assert not run_complete(str(tmp_path / "absent"))
    paths = []
    for name, acc in (("teacher", 0.75), ("student", 0.625)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"task": "rte", "split": "dev", "examples": 8, "model": f"runs/{name}",
                                    "metrics": {"loss": 0.5, "accuracy": acc}}), encoding="utf-8")
        paths.append(str(path))
    table = report(paths).splitlines()
    assert table[0] == "rte dev (8 examples)" and "accuracy" in table[1] and "loss" not in table[1]
    assert table[2].split()[:2] == ["teacher", "0.7500"] and table[3].split()[:2] == ["student", "0.6250"]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_the_whole_chain_on_the_cpu(tmp_path):
    """Every phase through torchrun on one CPU rank, from tiny stage-1 stand-ins; a second call skips them."""
    from tests.distill.task_cases import make_tokenizer, task_config, write_topic_task
    from tests.distill.task_runs import _run

    tok = make_tokenizer(str(tmp_path / "tok"))
    topics = write_topic_task(str(tmp_path / "topics"), train=16, dev=8)
    _run(task_config("finetune", 1, 1, tok, {"file": topics}, str(tmp_path / "t"), iterations=1))
    _run(task_config("task_logits", 1, 1, tok, {"file": topics}, str(tmp_path / "s"), iterations=1,
                     teacher=str(tmp_path / "t")))
    sets = ["--set", "train.epochs=1", "--set", "train.micro_batch_size=4", "--set", "train.global_batch_size=8",
            "--set", f"data.tokenizer_model={tok}", "--set", "data.seq_length=64", "--set", "checkpoint.save_interval=0"]
    env = {**_env(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = run(SCRIPT, topics, "--cpu", *sets, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("teacher", "student_2a", "student_2b"):
        assert run_complete(str(out / name)), name
    table = proc.stdout.strip().splitlines()[-4:]
    assert table[0] == "topics dev (8 examples)" and table[1].split()[1:3] == ["accuracy", "f1_macro"]
    assert table[2].startswith("  teacher") and str(out / "teacher") in table[2]
    assert table[3].startswith("  student") and str(out / "student_2b") in table[3]
    again = run(SCRIPT, topics, "--cpu", *sets, env=env, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3, again.stdout[-2000:]

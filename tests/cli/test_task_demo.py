"""glmd-task-demo: from a quickstart work directory and WordNet's data.noun, teacher fine-tuning, the GLMD
student (2a -> 2b) and the directly fine-tuned student, with a table of the three; a work directory
without the stage-1 runs is one error line."""
import contextlib
import io
import os
import shutil


from megatron_glmd.cli.task_demo import main
from tests.distributed import run_distributed
from tests.distill.task_cases import make_tokenizer, task_config, write_topic_task
from tests.distill.task_runs import _run

DEFINITIONS = {8: ["the part of the body between the neck and the hip", "a bone of the arm or of the leg",
                         "an organ of the body that pumps the blood", "the skin and the hair of the head"],
               28: ["the time of day after noon", "a period of seven days", "the first day of the year",
                    "the time between one event and the next"]}


def _data_noun(folder):
    """A WordNet data.noun of two categories (8: body, 28: time), twenty synsets each."""
    lines = ["  1 This software and database is being provided to you, the LICENSEE, by  \n"]
    for lex, glosses in DEFINITIONS.items():
        for k in range(20):
            offset = f"{lex:02d}{k:06d}"
            lines.append(f"{offset} {lex:02d} n 01 word{k} 0 000 | {glosses[k % 4]} number {k}  \n")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "data.noun"), "w", encoding="utf-8") as f:
        f.writelines(lines)
    return str(folder)


def test_without_the_quickstart_runs_one_line(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path}/teacher holds no finished stage-1 run")


def _demo(rank, world, tmp_path):
    """The demo in a process of its own (it starts a process group and DeepSpeed), its output returned."""
    data = tmp_path / "qs" / "data"
    tok = make_tokenizer(str(tmp_path / "tok"))
    os.makedirs(data)
    shutil.copy(tok, data / "tokenizer.model")
    topics = {"file": write_topic_task(str(tmp_path / "topics"), train=8, dev=4)}
    _run(task_config("finetune", 1, 1, tok, topics, str(tmp_path / "qs" / "teacher"), iterations=1))
    _run(task_config("task_logits", 1, 1, tok, topics, str(tmp_path / "qs" / "student_glmd"), iterations=1,
                     teacher=str(tmp_path / "qs" / "teacher")))
    args = ["--workdir", str(tmp_path / "qs"), "--wordnet-dir", _data_noun(tmp_path / "wn"), "--labels", "body,time",
            "--teacher-epochs", "1", "--distill-epochs", "1", "--batch-size", "8", "--seq-length", "48",
            "--eval-split", "dev"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(args)
    return status, out.getvalue()


def test_the_three_accuracies(tmp_path):
    status, text = run_distributed(1, _demo, tmp_path)[0]
    assert status == 0
    out = text.splitlines()
    rows = out[-3:]
    assert out[-5].startswith("WordNet noun categories, dev split")
    for row, label in zip(rows, ("teacher, fine-tuned", "student, GLMD 2a -> 2b", "student, fine-tuned on")):
        assert row.strip().startswith(label)
        accuracy, f1 = (float(x) for x in row.split()[-2:])
        assert 0 <= accuracy <= 1 and 0 <= f1 <= 1
    for name in ("teacher_finetuned", "student_2a", "student_2b", "student_finetuned"):
        assert os.path.isfile(tmp_path / "qs" / "task" / name / "eval_dev.json")

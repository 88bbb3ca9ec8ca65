"""glmd-task-demo: GLMD's stage 2 on a real labelled English task, on a CPU in minutes.

    glmd-quickstart --workdir quickstart_out          # first: the stage-1 teacher/ and student_glmd/
    glmd-task-demo --workdir quickstart_out [--wordnet-dir /usr/share/wordnet] [--labels act,body,location,time]

The task: WordNet noun definitions labelled with their lexicographer category (Princeton WordNet
3.0, WordNet 3.0 license, Debian package ``wordnet-base``: megatron_glmd/tasks/wordnet.py), as a
cloze task "DEFINITION It is a kind of [MASK]." with each category's name as its one-token word.
From the quickstart's stage-1 models, each phase an ordinary run of the training engine:

1. the teacher fine-tuned on the task's labels (``finetune``),
2. the GLMD student: 2a (``task_distill``, L'_sp at τ = 15 on the task's inputs, no labels), then
   2b (``task_logits``, soft cross-entropy of the task logits at τ = 1, no labels),
3. the same stage-1 student fine-tuned directly on the labels for as many epochs as 2a and 2b together,

then the accuracy and macro-F1 of the three on the task's held-out test split.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from ..config import ConfigError


def _run(workdir: str, name: str, mode: str, init: str, epochs: float, lr: float, args, teacher: str = None) -> dict:
    data = os.path.join(workdir, "data")
    return {
        "mode": mode, "init_checkpoint": init, "teacher_checkpoint": teacher,
        "model": {"hidden_dropout": 0.0, "attention_dropout": 0.0},
        "task": {"file": os.path.join(workdir, "wordnet", "task.yaml"), "eval_split": args.eval_split},
        "train": {"epochs": epochs, "micro_batch_size": args.batch_size, "global_batch_size": args.batch_size,
                  "seed": 1234},
        "optimizer": {"lr": lr, "warmup_ratio": 0.1, "decay_style": "linear", "weight_decay": 0.01},
        "data": {"tokenizer_model": os.path.join(data, "tokenizer.model"), "seq_length": args.seq_length},
        "checkpoint": {"save_dir": os.path.join(workdir, "task", name)},
        "logging": {"log_interval": 10 ** 9, "progress_bar": False},
    }


def run_phase(values: dict, label: str, log=print) -> dict:
    """Train (unless the run is complete already) and score one phase; returns its metrics."""
    from ..config import run_config_from_dict
    from ..engine.task_trainer import TaskTrainer

    start = time.perf_counter()
    trainer = TaskTrainer.from_config(run_config_from_dict(values), log=lambda *a, **k: None)
    history = trainer.train()
    metrics = trainer.finish()
    curve = f"loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}, " if history else ""
    log(f"      {label}: {trainer.cfg.train.iterations} iterations ({curve}{time.perf_counter() - start:.0f} s), "
        f"accuracy {metrics['accuracy']:.4f}")
    return metrics


def write_wordnet_task(workdir: str, args, log=print) -> None:
    from ..data.tokenizer import load_tokenizer
    from ..tasks.encode import verbalizer_token_ids
    from ..tasks.task import make_task
    from ..tasks.wordnet import write_task

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    verbalizer = {label: label for label in labels}
    task = make_task("wordnet-nouns", "{text} It is a kind of [MASK].", labels, verbalizer,
                     where=[f"--labels {label}" for label in labels])
    verbalizer_token_ids(task, load_tokenizer(os.path.join(workdir, "data", "tokenizer.model")))
    counts = write_task(os.path.join(workdir, "wordnet"), os.path.join(args.wordnet_dir, "data.noun"), verbalizer,
                        args.max_per_label)
    log(f"[1/4] task: WordNet noun definitions, labels {', '.join(labels)}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="glmd-task-demo", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="quickstart_out", help="glmd-quickstart's work directory")
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet", help="the folder holding WordNet's data.noun")
    p.add_argument("--labels", default="act,body,location,time",
                   help="noun categories whose names are single tokens of the quickstart's vocabulary")
    p.add_argument("--max-per-label", type=int, default=200, help="examples per label and split")
    p.add_argument("--teacher-epochs", type=float, default=6.0)
    p.add_argument("--distill-epochs", type=float, default=6.0, help="epochs of 2a and of 2b each")
    p.add_argument("--teacher-lr", type=float, default=5e-4)
    p.add_argument("--student-lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-length", type=int, default=64)
    p.add_argument("--eval-split", default="test", choices=["dev", "test"])
    args = p.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    from ..data.errors import DataError

    start = time.perf_counter()
    try:
        for name in ("teacher", "student_glmd"):
            if not os.path.isfile(os.path.join(workdir, name, "latest")):
                raise ConfigError(f"{os.path.join(workdir, name)} holds no finished stage-1 run: run "
                                  f"glmd-quickstart --workdir {args.workdir} first")
        write_wordnet_task(workdir, args)
        task = lambda name: os.path.join(workdir, "task", name)      # noqa: E731
        print(f"[2/4] teacher: fine-tuning the stage-1 teacher on the labels ({args.teacher_epochs:g} epochs)")
        teacher = run_phase(_run(workdir, "teacher_finetuned", "finetune", os.path.join(workdir, "teacher"),
                                 args.teacher_epochs, args.teacher_lr, args), "teacher")
        print(f"[3/4] GLMD student: 2a (L'_sp, tau=15) then 2b (task logits, tau=1), {args.distill_epochs:g} "
              "epochs each, no labels")
        run_phase(_run(workdir, "student_2a", "task_distill", os.path.join(workdir, "student_glmd"),
                       args.distill_epochs, args.student_lr, args, teacher=task("teacher_finetuned")), "2a")
        glmd = run_phase(_run(workdir, "student_2b", "task_logits", task("student_2a"), args.distill_epochs,
                              args.student_lr, args, teacher=task("teacher_finetuned")), "2b")
        print(f"[4/4] baseline: the stage-1 student fine-tuned on the labels ({2 * args.distill_epochs:g} epochs)")
        direct = run_phase(_run(workdir, "student_finetuned", "finetune", os.path.join(workdir, "student_glmd"),
                                2 * args.distill_epochs, args.student_lr, args), "student, fine-tuned")
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(f"WordNet noun categories, {args.eval_split} split ({time.perf_counter() - start:.0f} s in all)")
    print(f"  {'model':<44}{'accuracy':>10}{'macro-F1':>10}")
    for label, m in (("teacher, fine-tuned", teacher), ("student, GLMD 2a -> 2b (no labels)", glmd),
                     ("student, fine-tuned on the labels", direct)):
        print(f"  {label:<44}{m['accuracy']:>10.4f}{m['f1_macro']:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-rank bodies of the task-mode engine tests (run by tests.distributed.run_distributed)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from megatron_glmd.checkpoint import checkpointing as ckpt
from megatron_glmd.engine.task_trainer import TaskTrainer
from megatron_glmd.engine.trainer import Trainer
from megatron_glmd.model import GLMStage
from megatron_glmd.model.build import build_stage
from tests.distill.layout_curves import assert_curve_matches_reference, run_layouts  # noqa: F401 (re-exported)
from tests.distill.task_cases import task_config


def _quiet(*args, **kwargs):
    pass


def _run(cfg):
    trainer = TaskTrainer.from_config(cfg, log=_quiet)
    return trainer, [r["loss"] for r in trainer.train()]


def task_chain(rank, world, tp, pp, workdir, tok, topics, copa):
    """Teacher fine-tuning, 2a and 2b on the single-token task, 2a and 2b on COPA (a padded third
    candidate), then ``evaluate`` of the 2b student: every curve, the predictions and the metrics."""
    d = lambda name: os.path.join(workdir, name)          # noqa: E731
    single, multi = {"file": topics}, {"name": "copa", "data_dir": copa, "num_choices": 3}
    out = {}
    _, out["finetune"] = _run(task_config("finetune", tp, pp, tok, single, d("teacher")))
    _, out["task_distill"] = _run(task_config("task_distill", tp, pp, tok, single, d("s2a"), teacher=d("teacher")))
    _, out["task_logits"] = _run(task_config("task_logits", tp, pp, tok, single, d("s2b"), init=d("s2a"),
                                             teacher=d("teacher")))
    _, out["copa_task_distill"] = _run(task_config("task_distill", tp, pp, tok, multi, d("c2a"), teacher=d("teacher"),
                                                   iterations=3))
    _, out["copa_task_logits"] = _run(task_config("task_logits", tp, pp, tok, multi, d("c2b"), init=d("c2a"),
                                                  teacher=d("teacher"), iterations=3))
    evaluation = _evaluate(out, tp, pp, tok, single, d)
    if tp == 1 and rank == 0:
        out["naive_predictions"] = naive_predictions(evaluation, d("s2b"))
    dist.barrier()
    return out


def _evaluate(out: dict, tp, pp, tok, task: dict, d) -> TaskTrainer:
    """``evaluate`` of the 2b student (``d("s2b")``): its metrics, predictions and results file into ``out``."""
    evaluation = TaskTrainer.from_config(task_config("evaluate", tp, pp, tok, task, d("eval"), init=d("s2b")),
                                         log=_quiet)
    evaluation.train()
    out["metrics"] = evaluation.finish()
    out["predictions"] = evaluation.last_predictions["student"]
    out["results"] = evaluation.results_path()
    return evaluation


def naive_predictions(trainer: TaskTrainer, model_dir: str):
    """argmax over the verbalizer ids of the [sop] row of each eval example, from the whole saved model run
    in this process alone (TP = PP = 1), example by example."""
    model = GLMStage(trainer.cfg.model, tp_group=None)
    ckpt.load_stage_weights(model, model_dir, "student.", 0)
    model.eval()
    data = trainer.task_data
    ids = torch.tensor(data.verbalizer_ids)
    out = []
    with torch.no_grad():
        for i in range(len(data.eval)):
            batch = trainer.collate([{**data.eval[i], "index": i}])
            logits = model(batch["input_ids"], batch["position_ids"], batch["sep"], batch["length"])
            out.append(int(logits[0, batch["sep"][0], ids].argmax()))
    return out


def _gathered(logits, group, size):
    if size == 1:
        return logits
    parts = [torch.empty_like(logits) for _ in range(size)]
    dist.all_gather(parts, logits.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


def soft_ce_first_step(rank, world, workdir, tok, topics, copa):
    """The first 2b loss of the engine at TP = world, and the same loss computed naively: the micro-batches'
    full logits gathered over TP, the task logits indexed out of them, soft CE in fp64 at τ = 1 averaged
    over the global batch. Single-token (topics) and multi-token (COPA with a padded candidate)."""
    d = lambda name: os.path.join(workdir, name)          # noqa: E731
    _run(task_config("finetune", world, 1, tok, {"file": topics}, d("teacher"), iterations=1))
    out = {}
    for name, task in (("single", {"file": topics}), ("multi", {"name": "copa", "data_dir": copa, "num_choices": 3})):
        trainer = TaskTrainer.from_config(task_config("task_logits", world, 1, tok, task, d(f"s2b_{name}"),
                                                      teacher=d("teacher"), iterations=1), log=_quiet)
        naive = _naive_soft_ce(trainer)
        out[name] = (trainer.train()[0]["loss"], naive)
    return out


def _naive_soft_ce(trainer: TaskTrainer) -> float:
    loader = trainer._loader(trainer.train_data)
    stage, grid, data = trainer.stage, trainer.grid, trainer.task_data
    vocab = trainer.cfg.model.vocab_size
    total, examples = 0.0, 0
    with torch.no_grad():
        for _ in range(trainer.gas):
            b = next(loader)
            args = (b["input_ids"], b["position_ids"], b["sep"], b["length"])
            s, t = (_gathered(m(*args), grid.tp_group, grid.tp_size)[..., :vocab].double()
                    for m in (stage.student, stage.teacher))
            if data.multi_token:
                s, t = (_candidate_scores(x, b, data.num_choices) for x in (s, t))
                keep = b["choice_mask"] > 0
                s, t = s.masked_fill(~keep, float("-inf")), t.masked_fill(~keep, float("-inf"))
            else:
                rows = torch.arange(len(b["sep"]))
                ids = torch.tensor(data.verbalizer_ids)
                s, t = s[rows, b["sep"]][:, ids], t[rows, b["sep"]][:, ids]
            terms = F.softmax(t, -1) * F.log_softmax(s, -1)
            total -= float(torch.where(torch.isfinite(terms), terms, torch.zeros_like(terms)).sum())
            examples += len(b["label"])
    return total / examples


def _candidate_scores(logits, batch, n):
    lp = F.log_softmax(logits, -1).gather(-1, batch["target_ids"].unsqueeze(-1)).squeeze(-1)
    return (lp * batch["loss_mask"].double()).sum(-1).view(-1, n)


def distill_equals_stage1(rank, world, workdir, tok, topics, copa):
    """2a's loss curve and the stage-1 ``distill`` loss curve on the same samples in the same order."""
    from megatron_glmd.config import run_config_from_dict
    from megatron_glmd.distill.task_data import EpochSamples

    d = lambda name: os.path.join(workdir, name)          # noqa: E731
    _run(task_config("finetune", 1, 1, tok, {"file": topics}, d("teacher"), iterations=1))
    out = {}
    for name, task in (("single", {"file": topics}), ("multi", {"name": "copa", "data_dir": copa})):
        cfg = task_config("task_distill", 1, 1, tok, task, d(f"s2a_{name}"), teacher=d("teacher"))
        trainer, task_curve = _run(cfg)
        n = trainer.task_data.num_choices
        samples = EpochSamples(trainer.task_data.train, cfg.train.iterations * cfg.train.global_batch_size,
                               cfg.data.seed)
        values = cfg.to_dict()
        values.update(mode="distill", task={}, init_checkpoint=None, checkpoint={"save_dir": d(f"stage1_{name}")})
        values["train"].update(global_batch_size=cfg.train.global_batch_size * n,
                               micro_batch_size=cfg.train.micro_batch_size * n, epochs=None)
        values["data"]["train_prefix"] = "task samples"
        stage1 = Trainer(run_config_from_dict(values), CandidateRows(samples, n), log=_quiet)
        out[name] = (task_curve, [r["loss"] for r in stage1.train()])
    return out


class CandidateRows:
    """Task samples as the stage-1 loader reads them: one blank-infilling sample per candidate row."""

    def __init__(self, samples, n):
        self.samples, self.n = samples, n

    def __len__(self):
        return len(self.samples) * self.n

    def __getitem__(self, j):
        sample = self.samples[j // self.n]
        if self.n == 1:
            return sample
        return {k: sample[k][j % self.n] for k in ("input_ids", "position_ids", "target_ids", "loss_mask", "sep",
                                                  "length")}


def decoder_task_chain(rank, world, tp, pp, workdir, tok, topics, copa):
    """The decoder family's task stage (tasks/encode_causal.py): teacher fine-tuning, 2a and 2b on the
    single-token task, 2b on COPA (a padded third candidate) from a 2a start, then ``evaluate`` of the
    2b student; at TP = 1 rank 0 also predicts naively from the saved model."""
    d = lambda name: os.path.join(workdir, name)          # noqa: E731
    single, multi = {"file": topics}, {"name": "copa", "data_dir": copa, "num_choices": 3}
    out = {}
    _, out["finetune"] = _run(task_config("finetune", tp, pp, tok, single, d("teacher")))
    _, out["task_distill"] = _run(task_config("task_distill", tp, pp, tok, single, d("s2a"), teacher=d("teacher"),
                                              iterations=3))
    _, out["task_logits"] = _run(task_config("task_logits", tp, pp, tok, single, d("s2b"), init=d("s2a"),
                                             teacher=d("teacher"), iterations=3))
    _, out["copa_task_logits"] = _run(task_config("task_logits", tp, pp, tok, multi, d("c2b"), init=d("s2a"),
                                                  teacher=d("teacher"), iterations=3))
    evaluation = _evaluate(out, tp, pp, tok, single, d)
    if tp == 1 and rank == 0:
        out["naive_predictions"] = naive_decoder_predictions(evaluation, d("s2b"), tok)
    dist.barrier()
    return out


def naive_decoder_predictions(trainer: TaskTrainer, model_dir: str, tokenizer_file: str):
    """The verbalizer argmax of a plain prompt: each eval example's text with " This is about" encoded as
    one string, run alone (no padding) through the whole saved decoder (TP = PP = 1), the next-token
    logits of its last position."""
    from megatron_glmd.data.hf_tokenizer import HFTokenizer

    tok = HFTokenizer(tokenizer_file)
    model = build_stage(trainer.cfg.model, tp_group=None)
    ckpt.load_stage_weights(model, model_dir, "student.", 0)
    model.eval()
    ids = torch.tensor(trainer.task_data.verbalizer_ids)
    out = []
    with torch.no_grad():
        for example in trainer.task_data.eval.examples:
            prompt = torch.tensor([tok.encode(example.fields["text"] + " This is about")])
            n = prompt.shape[1]
            logits = model(prompt, torch.arange(n).unsqueeze(0), torch.tensor([n]))
            out.append(int(logits[0, -1, ids].argmax()))
    return out

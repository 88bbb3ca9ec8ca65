"""The training engine: teacher pre-training and stage-1 GLMD distillation on DeepSpeed.

One engine for both modes. ``pretrain`` trains a GLM on hard-label blank infilling (how teachers
are made); ``distill`` trains a student on L'_sp against a frozen teacher co-located in every
pipeline stage (see :mod:`.pipeline`). DeepSpeed provides the pipeline schedule, ZeRO-1 over the
data-parallel group, mixed precision and gradient clipping; this module provides the model, the
loss (normalised once over the whole global batch), data, checkpoints and logging.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from ..config import ConfigError
from ..data.loader import DataParallelLoader
from ..parallel.grid import ParallelGrid
from ..parallel.layers import initialize_parameters
from ..parallel.random import model_parallel_seed
from ..parallel.vocab import vocab_shard_real_columns
from . import checkpointing as ckpt
from .intermediate import stage_pairs
from ..model.attention_mask import valid_token_mask
from .losses import distill_loss_sums, distill_normalizer, hard_label_normalizer, hard_label_sum
from .metrics import default_peak_tflops, memory_gib, training_flops_per_token
from .optim import build_optimizer, build_scheduler, param_groups
from .engine import deepspeed_config, init_distributed, pipeline_item
from .pipeline import build_pipeline
from ..config import RunConfig

EVAL_FIELDS = ("kl", "student_ce", "teacher_ce", "valid_tokens", "target_tokens")


class Trainer:
    def __init__(self, cfg: RunConfig, train_data, valid_data=None, log=print):
        # Everything that can be wrong with the configuration is checked before any work starts.
        world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
        self.cfg = cfg.validate(world)
        if cfg.train.precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("train.precision fp16 needs a GPU (DeepSpeed's CPU accelerator runs fp32 and bf16)")
        self.teacher_config = self._check_checkpoints()
        init_distributed()
        self.log = log if dist.get_rank() == 0 else (lambda *a, **k: None)
        self.train_data, self.valid_data = train_data, valid_data
        tp, pp = cfg.parallel.tp, cfg.parallel.pp

        self.grid = ParallelGrid.build(tp_size=tp, pp_size=pp)
        self.dp = self.grid.dp_size
        self.deepspeed_config = deepspeed_config(cfg, self.dp)
        self.gas = self.deepspeed_config["gradient_accumulation_steps"]
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
        model_parallel_seed(cfg.train.seed, tp_rank=self.grid.tp_rank, pp_rank=self.grid.pp_rank)

        student_config = cfg.model.replace(checkpoint_activations=cfg.train.checkpoint_activations, dtype="fp32")
        self.student_config = student_config
        # Real (non-padding) vocabulary columns of this TP rank's logits shard: the losses' vocab_end.
        self.vocab_end = vocab_shard_real_columns(student_config.vocab_size, student_config.padded_vocab_size(tp),
                                                  self.grid.tp_rank, tp)
        self.intermediate_weight = cfg.loss.intermediate_weight if cfg.mode == "distill" else 0.0
        self.pipe = build_pipeline(student_config, self.grid, self._loss_fn, self.teacher_config,
                                   intermediate_loss=self.intermediate_weight > 0)
        self.stage = self.pipe.local_stage
        self.stage.student.init_weights(cfg.train.seed)
        trained = [self.stage.student]
        if self.stage.intermediate is not None:
            initialize_parameters(self.stage.intermediate.named_parameters(prefix="intermediate"), cfg.train.seed)
            trained.append(self.stage.intermediate)
        if self.teacher_config is not None:
            ckpt.load_stage_weights(self.stage.teacher, cfg.teacher_checkpoint, "student.", self.grid.tp_rank)
            self.stage.teacher_to(device=self.device)
        # Loss parts reported through DeepSpeed's additional losses; every stage must know their names.
        part_names = ["hard_label"] if cfg.mode == "pretrain" else (
            ["distill"] + (["hard_label"] if cfg.loss.hard_label_weight > 0 else []))
        self._parts = {name: torch.zeros((), device=self.device) for name in part_names}
        self.pipe.get_additional_losses = lambda: dict(self._parts)
        self._normalizers: Dict[str, torch.Tensor] = {}
        self._evaluating = False

        import deepspeed

        optimizer = build_optimizer(param_groups(trained, cfg.optimizer.weight_decay), cfg.optimizer)
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.pipe, optimizer=optimizer, config=self.deepspeed_config,
            lr_scheduler=build_scheduler(cfg.optimizer, cfg.train.iterations))
        self.iteration = 0
        self.train_loader = self._loader(train_data)
        self._maybe_resume()
        self.flops_per_token = training_flops_per_token(student_config, self.teacher_config, cfg.data.seq_length,
                                                        cfg.train.checkpoint_activations)
        self.peak_tflops = cfg.logging.peak_tflops_per_device or default_peak_tflops()
        self.writer = None
        if cfg.logging.tensorboard_dir and dist.get_rank() == 0:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(cfg.logging.tensorboard_dir)

    # ------------------------------------------------------------------ set-up checks
    def _check_checkpoints(self):
        """Teacher and resume checkpoints are checked on every rank before any group or model exists."""
        cfg = self.cfg
        teacher_config = None
        if cfg.mode == "distill":
            saved = ckpt.saved_run_config(cfg.teacher_checkpoint)
            path = os.path.join(cfg.teacher_checkpoint, ckpt.CONFIG)
            ckpt.check_compatible(saved, cfg, cfg.teacher_checkpoint, "teacher")
            if saved.model.vocab_size != cfg.model.vocab_size:
                raise ConfigError(f"{path}: teacher vocab_size={saved.model.vocab_size}, student "
                                  f"vocab_size={cfg.model.vocab_size}: teacher and student must share the vocabulary")
            if ckpt.latest_tag(cfg.teacher_checkpoint) is None:
                raise ConfigError(f"teacher_checkpoint {cfg.teacher_checkpoint} has no '{ckpt.LATEST}' file: "
                                  "no complete checkpoint to load")
            # Built directly in the run's precision (it is never trained) and without dropout (eval mode).
            teacher_config = saved.model.replace(dtype=cfg.train.precision, hidden_dropout=0.0,
                                                 attention_dropout=0.0, checkpoint_activations=False)
            try:
                teacher_config.validate(tp_size=cfg.parallel.tp, pp_size=cfg.parallel.pp)
            except ConfigError as e:
                raise ConfigError(f"{path}: teacher model: {e}") from None
            if cfg.loss.intermediate_weight > 0:
                for k in range(cfg.parallel.pp):
                    stage_pairs(cfg.model, teacher_config, cfg.parallel.pp, k)
        elif cfg.loss.intermediate_weight > 0:
            raise ConfigError("loss.intermediate_weight needs mode 'distill' (it compares with a teacher)")
        save_dir = cfg.checkpoint.save_dir
        if save_dir and cfg.checkpoint.resume and os.path.isdir(save_dir) and ckpt.latest_tag(save_dir):
            saved = ckpt.saved_run_config(save_dir)
            ckpt.check_compatible(saved, cfg, save_dir, "resume")
            ckpt.check_same_model(saved.model, cfg.model, os.path.join(save_dir, ckpt.CONFIG), "resume")
        return teacher_config

    # ------------------------------------------------------------------ loss
    def _loss_fn(self, outputs, labels):
        target_ids, loss_mask, length = (x.to(self.device) for x in labels)
        student_logits = outputs[0]
        tp_group = self.grid.tp_group
        if self._evaluating:
            return self._eval_sums(outputs, target_ids, loss_mask, length)
        if self.cfg.mode == "pretrain":
            sums = {"hard_label": hard_label_sum(student_logits, target_ids, loss_mask, tp_group=tp_group,
                                                 vocab_end=self.vocab_end)}
        else:
            sums = distill_loss_sums(self.cfg.loss, student_logits, outputs[1], target_ids, loss_mask, length,
                                     tp_group=tp_group, vocab_end=self.vocab_end,
                                     vocab_size=self.student_config.vocab_size)
        # Each micro-batch's loss is scaled so that DeepSpeed's mean over micro-batches and DP ranks
        # equals Σ(all sums) / (global token count): one division per global batch.
        scale = self.gas * self.dp
        normalized = {k: v * scale / self._normalizers[k] for k, v in sums.items()}
        self._parts = {k: v.detach() for k, v in normalized.items()}
        weights = {"distill": 1.0, "hard_label": 1.0 if self.cfg.mode == "pretrain" else self.cfg.loss.hard_label_weight}
        return sum(weights[k] * v for k, v in normalized.items())

    def _set_normalizers(self, batches: List[Dict[str, torch.Tensor]]) -> None:
        """Global-batch token counts (all micro-batches, all DP ranks), computed before the step."""
        local = [[float(distill_normalizer(self.cfg.loss, b["length"], b["loss_mask"])),
                  float(hard_label_normalizer(b["loss_mask"])), float(b["length"].sum())] for b in batches]
        # On the engine's device: an nccl group has no CPU backend.
        counts = torch.tensor(local, dtype=torch.float64, device=self.device).sum(0)
        if self.dp > 1:
            dist.all_reduce(counts, group=self.grid.dp_group)
        counts = counts.clamp(min=1.0)
        self._normalizers = {"distill": counts[0].float(), "hard_label": counts[1].float()}
        if self.intermediate_weight > 0:
            # d(total)/d(stage sum); DeepSpeed divides gradients by DP, and scales fp16 losses.
            self._intermediate_denominator = float(counts[2]) * self.cfg.model.num_layers
            loss_scale = getattr(self.engine.optimizer, "loss_scale", 1.0) if self.cfg.train.precision == "fp16" \
                else 1.0
            self.stage.intermediate_scale = (self.intermediate_weight * self.dp * float(loss_scale)
                                             / self._intermediate_denominator)

    def _intermediate_loss(self) -> float:
        """This step's intermediate-layer MSE per token and pair, summed over stages and DP ranks."""
        local = torch.stack(self.stage.intermediate_sums).sum() if self.stage.intermediate_sums else \
            torch.zeros((), device=self.device)
        self.stage.intermediate_sums.clear()
        total = local.float().reshape(1)
        for group, size in ((self.grid.pp_group, self.grid.pp_size), (self.grid.dp_group, self.dp)):
            if size > 1:
                dist.all_reduce(total, group=group)
        return float(total) / self._intermediate_denominator

    def _eval_sums(self, outputs, target_ids, loss_mask, length):
        from kernels.softmax_kl import softmax_kl

        tp_group = self.grid.tp_group
        logits = outputs[0]
        v = logits.shape[-1]
        valid = valid_token_mask(length, target_ids.shape[1]).reshape(-1)
        zero = torch.zeros((), device=self.device)
        kl = teacher_ce = zero
        if len(outputs) > 1:
            kl = softmax_kl(logits.reshape(-1, v), outputs[1].reshape(-1, v), temperature=1.0, mask=valid,
                            group=tp_group, vocab_end=self.vocab_end, scale_by_t2=False, reduction="sum")
            teacher_ce = hard_label_sum(outputs[1], target_ids, loss_mask, tp_group=tp_group, vocab_end=self.vocab_end)
        student_ce = hard_label_sum(logits, target_ids, loss_mask, tp_group=tp_group, vocab_end=self.vocab_end)
        return torch.stack([kl.float(), student_ce.float(), teacher_ce.float(), valid.sum().float(),
                            (loss_mask > 0).sum().float()])

    # ------------------------------------------------------------------ loop
    def _loader(self, dataset) -> DataParallelLoader:
        t = self.cfg.train
        return DataParallelLoader(dataset, t.global_batch_size, t.micro_batch_size, self.grid.dp_rank, self.dp)

    def _next_batches(self, loader: DataParallelLoader, what: str) -> List[Dict[str, torch.Tensor]]:
        try:
            return [next(loader) for _ in range(self.gas)]
        except StopIteration:
            raise RuntimeError(f"{what} data exhausted after {loader.consumed_samples} samples: the dataset has "
                               f"{len(loader.dataset)} samples, fewer than needed for the configured iterations "
                               f"x global batch {self.cfg.train.global_batch_size}") from None

    def train_step(self) -> Dict[str, float]:
        batches = self._next_batches(self.train_loader, "training")
        self._set_normalizers(batches)
        loss = self.engine.train_batch(iter([pipeline_item(b) for b in batches]))
        self.iteration += 1
        parts = self.engine.agg_additional_losses or {}
        out = {"loss": float(loss)}
        out.update({f"loss/{k}": float(v) for k, v in parts.items()})
        if self.intermediate_weight > 0:
            out["loss/intermediate"] = self._intermediate_loss()
            out["loss"] += self.intermediate_weight * out["loss/intermediate"]
        return out

    def evaluate(self, dataset=None, iterations: Optional[int] = None) -> Dict[str, float]:
        """Held-out student (and teacher) blank-infilling loss and student–teacher KL (τ = 1) per token."""
        dataset = dataset if dataset is not None else self.valid_data
        loader = self._loader(dataset)
        iterations = min(iterations or self.cfg.logging.eval_iters, loader.num_global_batches)
        if iterations < 1:
            raise ValueError(f"evaluation data has {len(dataset)} samples, fewer than one global batch "
                             f"({self.cfg.train.global_batch_size})")
        totals = torch.zeros(len(EVAL_FIELDS), dtype=torch.float64)
        self._evaluating = True
        try:
            for _ in range(iterations):
                batches = self._next_batches(loader, "evaluation")
                self.engine.total_loss = self.engine.total_additional_losses = None  # left over from training
                out = self.engine.eval_batch(iter([pipeline_item(b) for b in batches]), bcast_loss=False)
                result = torch.zeros(len(EVAL_FIELDS), device=self.device)
                if self.grid.is_last_stage:
                    result = out.to(self.device, torch.float32)
                if self.grid.pp_size > 1:
                    dist.broadcast(result, src=self.grid.pp_ranks[-1], group=self.grid.pp_group)
                totals += result.double().cpu()
        finally:
            self._evaluating = False
        kl, s_ce, t_ce, n_valid, n_target = totals.tolist()
        metrics = {"student_loss": s_ce / max(n_target, 1.0)}
        if self.teacher_config is not None:
            metrics.update(teacher_loss=t_ce / max(n_target, 1.0), kl=kl / max(n_valid, 1.0))
        return metrics

    def _install_stop_handlers(self) -> None:
        """SIGUSR1/SIGTERM (Slurm's warning before the time limit, or a scancel) ask for a save and a
        clean stop at the next iteration boundary."""
        self._stop_signal = 0
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum, frame):
            self._stop_signal = signum

        for signum in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(signum, request_stop)

    def _stop_requested(self) -> bool:
        """True on every rank as soon as any rank received a stop signal (one scalar all-reduce)."""
        flag = torch.tensor([float(self._stop_signal)], device=self.device)
        if dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def train(self) -> List[Dict[str, float]]:
        """Run to ``train.iterations``; returns the per-iteration log records of this call.

        A stop signal ends the loop early after saving a checkpoint (when a save_dir is set)."""
        cfg = self.cfg
        self._install_stop_handlers()
        history = []
        tokens_per_iter = cfg.train.global_batch_size * cfg.data.seq_length
        bar = None
        if cfg.logging.progress_bar and dist.get_rank() == 0 and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=cfg.train.iterations, initial=self.iteration, desc=cfg.mode, unit="it", dynamic_ncols=True)
        window_start, window_iters = time.perf_counter(), 0
        while self.iteration < cfg.train.iterations:
            record = self.train_step()
            window_iters += 1
            record.update(iteration=self.iteration, lr=self.engine.get_lr()[0])
            grad_norm = self.engine.get_global_grad_norm()
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
            if self.iteration % cfg.logging.log_interval == 0 or self.iteration == cfg.train.iterations:
                elapsed = time.perf_counter() - window_start
                record.update(self._throughput(window_iters, elapsed, tokens_per_iter))
                self._log(record, bar)
                window_start, window_iters = time.perf_counter(), 0
            if cfg.logging.eval_interval and self.iteration % cfg.logging.eval_interval == 0 and self.valid_data:
                self._log({"iteration": self.iteration, **{f"valid/{k}": v for k, v in self.evaluate().items()}}, bar)
            if cfg.checkpoint.save_dir and cfg.checkpoint.save_interval and \
                    self.iteration % cfg.checkpoint.save_interval == 0:
                self.save()
            if self._stop_requested():
                self._log({"iteration": self.iteration, "stopped_by_signal": float(self._stop_signal)}, bar)
                break
        if bar is not None:
            bar.close()
        if cfg.checkpoint.save_dir and ckpt.latest_tag(cfg.checkpoint.save_dir) != ckpt.tag_for(self.iteration):
            self.save()
        return history

    def _throughput(self, iters: int, seconds: float, tokens_per_iter: int) -> Dict[str, float]:
        world = dist.get_world_size()
        tokens_per_s = iters * tokens_per_iter / max(seconds, 1e-9)
        tflops = tokens_per_s * self.flops_per_token / world / 1e12
        out = {"tokens_per_s": tokens_per_s, "samples_per_s": tokens_per_s / self.cfg.data.seq_length,
               "tflops_per_device": tflops, "memory_gib": memory_gib()}
        if self.peak_tflops:
            out["mfu"] = tflops / self.peak_tflops
        return out

    def _log(self, record: Dict[str, float], bar=None) -> None:
        if dist.get_rank() != 0:
            return
        text = " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        (bar.write if bar is not None else self.log)(text)
        if self.writer is not None:
            for k, v in record.items():
                if k != "iteration":
                    self.writer.add_scalar(k, v, record["iteration"])
            self.writer.flush()

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> str:
        import yaml

        state = {"iteration": self.iteration, "rng": ckpt.rng_state(), "loader": self.train_loader.state_dict()}
        text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        tag = ckpt.save_checkpoint(self.engine, self.cfg.checkpoint.save_dir, self.iteration, state, text,
                                   keep_last=self.cfg.checkpoint.keep_last)
        self.log(f"saved checkpoint {os.path.join(self.cfg.checkpoint.save_dir, tag)}")
        return tag

    def _compatible_loader_state(self, saved: Dict, save_dir: str) -> Dict:
        """A run extended by changing train.iterations has a training set of another length (its
        sample index covers more epochs); it continues at the same position, like Megatron does."""
        old, new = saved["dataset"], self.train_loader.state_dict()["dataset"]
        if old == new:
            return saved
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if differing == ["num_samples"]:
            self.log(f"warning: the training set has {new['num_samples']} samples, the checkpoint's had "
                     f"{old['num_samples']} (train.iterations changed): continuing at sample "
                     f"{saved['consumed_samples']}; the order of the samples after it differs")
            return {**saved, "dataset": new}
        raise ConfigError(f"{save_dir}: the checkpoint's data position belongs to another training set "
                          f"({', '.join(differing)} differ: {old} vs {new})")

    def _maybe_resume(self) -> None:
        save_dir = self.cfg.checkpoint.save_dir
        if not (save_dir and self.cfg.checkpoint.resume and os.path.isdir(save_dir)):
            return
        tag = ckpt.latest_tag(save_dir)
        if tag is None:
            return
        self.engine.load_checkpoint(save_dir, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
        state = ckpt.load_train_state(save_dir, tag)
        ckpt.set_rng_state(state["rng"])
        self.train_loader.load_state_dict(self._compatible_loader_state(state["loader"], save_dir))
        self.iteration = state["iteration"]
        self.log(f"resumed from {os.path.join(save_dir, tag)} at iteration {self.iteration}")

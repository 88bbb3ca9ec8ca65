"""The training loop: teacher pre-training and stage-1 GLMD distillation on DeepSpeed.

One engine for both modes. ``pretrain`` trains a GLM on hard-label blank infilling (how teachers
are made); ``distill`` trains a student on L'_sp against a frozen teacher co-located in every
pipeline stage (:mod:`.pipeline`). The Trainer only wires and loops: the checkpoints a run reads
are checked in :mod:`.checkpoint_checks`, DeepSpeed is set up in :mod:`.engine`, what is minimised
lives in :mod:`.objective`, checkpoints in :mod:`.checkpointing`, logging in :mod:`.metrics`.
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

from ..config import ConfigError, RunConfig
from ..config.deepspeed import deepspeed_config
from ..data.loader import DataParallelLoader
from ..model.compile import kernels_note
from ..model.flops import training_flops_per_token
from ..model.partition import run_partition
from ..parallel.grid import ParallelGrid
from ..parallel.layers import initialize_parameters
from ..parallel.random import model_parallel_seed
from ..checkpoint import checkpointing as ckpt
from ..checkpoint.checks import check_run_checkpoints, resolve_auto_checkpointing
from ..checkpoint.elastic import load_engine_checkpoint
from .deepspeed_setup import build_engine, device_memory_gib, engine_device, init_distributed, input_keys, pipeline_item
from .metrics import RunLogger, TrainingDiverged, default_peak_tflops, nonfinite_parts, throughput
from ..distill.objective import EVAL_FIELDS, Objective
from .pipeline import build_pipeline
from .quiet import set_verbose
from ..checkpoint.safe_load import CheckpointError
from ..distill.vocab_compression import keep_copy, prepare_run


class Trainer:
    objective_class = Objective   # what is minimised (the task modes' trainer sets its own)

    def __init__(self, cfg: RunConfig, train_data, valid_data=None, log=print):
        # Everything that can be wrong with the configuration is checked before any work starts.
        world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
        self.cfg = cfg.validate(world)
        if cfg.train.precision == "fp16" and not torch.cuda.is_available():
            raise ConfigError("train.precision fp16 needs a GPU (DeepSpeed's CPU accelerator runs fp32 and bf16)")
        # A compressed vocabulary (.vocab_compression) makes the student's model.vocab_size K.
        self.cfg, self.compression, compression_note = prepare_run(self.cfg)
        cfg = self.cfg
        self.teacher_config = check_run_checkpoints(cfg, self.compression)
        set_verbose(cfg.logging.verbose)     # before DeepSpeed is imported: its import logs a warning
        init_distributed()
        self.logger = RunLogger(log, dist.get_rank() == 0, cfg.logging.tensorboard_dir)
        self.log = self.logger.log
        for note in filter(None, (compression_note, kernels_note(cfg, engine_device().type))):
            self.log(note)
        # auto: the planner's decision for this layout and device (or the resumed checkpoint's)
        self.cfg, why = resolve_auto_checkpointing(cfg, self.teacher_config, world, device_memory_gib())
        cfg = self.cfg
        if why:
            self.log(why)
        self.train_data, self.valid_data = train_data, valid_data
        self.grid = ParallelGrid.build(tp_size=cfg.parallel.tp, pp_size=cfg.parallel.pp)
        self.dp = self.grid.dp_size
        self.deepspeed_config = deepspeed_config(cfg, self.dp)
        self.gas = cfg.train.accumulation_steps(self.dp)
        self.device = engine_device()
        model_parallel_seed(cfg.train.seed, tp_rank=self.grid.tp_rank, pp_rank=self.grid.pp_rank)

        self.student_config = cfg.model.replace(checkpoint_activations=cfg.train.checkpoint_activations, dtype="fp32")
        self.objective = self.objective_class(cfg, self.grid, self.device, self.compression)
        # FLOP-balanced layer ranges of both models per stage: what the launch planner prints.
        self.partition = run_partition(cfg, self.teacher_config)
        self.pipe = build_pipeline(self.student_config, self.grid, self.partition, self.objective.loss,
                                   self.teacher_config, intermediate_loss=self.objective.intermediate_weight > 0,
                                   compression=self.compression)
        self.pipe.get_additional_losses = lambda: dict(self.objective.parts)
        self.stage = self.pipe.local_stage
        self.stage.student.init_weights(cfg.train.seed)
        if cfg.init_checkpoint:   # another run's weights; optimizer and schedule start afresh
            ckpt.load_stage_weights(self.stage.student, cfg.init_checkpoint, "student.", self.grid.tp_rank)
        trained = [self.stage.student]
        if self.stage.intermediate is not None:
            initialize_parameters(self.stage.intermediate.named_parameters(prefix="intermediate"), cfg.train.seed)
            trained.append(self.stage.intermediate)
        if self.teacher_config is not None:
            ckpt.load_stage_weights(self.stage.teacher, cfg.teacher_checkpoint, "student.", self.grid.tp_rank)
            self.stage.teacher_to(device=self.device)
        self.engine = build_engine(cfg, self.pipe, trained, self.deepspeed_config)
        self.iteration = 0
        self.nonfinite_steps = 0      # steps skipped for a non-finite loss or grad norm in this process
        self.train_loader = self._loader(train_data)
        self._maybe_resume()
        # Model FLOPs (MFU) count each pass once; hardware FLOPs (HFU) add the recomputed forward.
        self.flops_per_token = training_flops_per_token(self.student_config, self.teacher_config,
                                                        cfg.data.seq_length, recompute=False)
        self.hardware_flops_per_token = training_flops_per_token(self.student_config, self.teacher_config,
                                                                 cfg.data.seq_length,
                                                                 recompute=cfg.train.checkpoint_activations)
        self.peak_tflops = cfg.logging.peak_tflops_per_device or default_peak_tflops()

    # ------------------------------------------------------------------ one step
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

    def _items(self, batches):
        """The pipeline's (inputs, labels) of each micro-batch, for this model family and objective."""
        return iter([pipeline_item(b, self.objective.label_keys, input_keys(self.cfg.model)) for b in batches])

    def train_step(self) -> Dict[str, float]:
        batches = self._next_batches(self.train_loader, "training")
        loss_scale = float(getattr(self.engine.optimizer, "loss_scale", 1.0)) \
            if self.cfg.train.precision == "fp16" else 1.0
        self.stage.intermediate_scale = self.objective.begin_step(batches, loss_scale)
        loss = self.engine.train_batch(self._items(batches))
        self.iteration += 1
        out = {"loss": float(loss)}
        out.update({f"loss/{k}": float(v) for k, v in (self.engine.agg_additional_losses or {}).items()})
        if self.objective.intermediate_weight > 0:
            out["loss/intermediate"] = self.objective.intermediate_loss(self.stage.intermediate_sums)
            self.stage.intermediate_sums.clear()
            out["loss"] += self.objective.intermediate_weight * out["loss/intermediate"]
        return out

    def evaluate(self, dataset=None, iterations: Optional[int] = None) -> Dict[str, float]:
        """Held-out student (and teacher) blank-infilling loss and student–teacher KL (τ = 1) per token."""
        dataset = dataset if dataset is not None else self.valid_data
        loader = self._loader(dataset)
        iterations = min(iterations or self.cfg.logging.eval_iters, loader.num_global_batches)
        if iterations < 1:
            raise ValueError(f"evaluation data has {len(dataset)} samples, fewer than one global batch "
                             f"({self.cfg.train.global_batch_size})")
        totals = self._eval_sums(loader, iterations, len(EVAL_FIELDS))
        return Objective.eval_metrics(totals.cpu(), with_teacher=self.teacher_config is not None,
                                      compressed=self.compression is not None)

    def _eval_sums(self, loader: DataParallelLoader, iterations: int, width: int) -> torch.Tensor:
        """Σ over ``iterations`` global batches of the objective's ``[width]`` evaluation sums, on every
        rank (the last stage computes them, one broadcast over PP shares them), fp64."""
        totals = torch.zeros(width, dtype=torch.float64, device=self.device)
        self.objective.evaluating = True
        try:
            for _ in range(iterations):
                batches = self._next_batches(loader, "evaluation")
                self.engine.total_loss = self.engine.total_additional_losses = None  # left over from training
                out = self.engine.eval_batch(self._items(batches), bcast_loss=False)
                result = torch.zeros(width, device=self.device)
                if self.grid.is_last_stage:
                    result = out.to(self.device, torch.float32)
                if self.grid.pp_size > 1:
                    dist.broadcast(result, src=self.grid.pp_ranks[-1], group=self.grid.pp_group)
                totals += result.double()
        finally:
            self.objective.evaluating = False
        return totals

    # ------------------------------------------------------------------ the loop
    def _install_stop_handlers(self) -> None:
        """SIGUSR1/SIGTERM (Slurm's warning before the time limit, or a scancel) ask for a save and a
        clean stop at the next iteration boundary."""
        self.stop_signal = 0          # the signal this rank received
        self.stopped_early = False    # True on every rank once any rank received one
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum, frame):
            if self.stop_signal:
                # A second signal: stop now, without saving (published checkpoints are complete).
                sys.stderr.write(f"signal {signum} again: stopping at once without saving\n")
                os._exit(128 + signum)
            self.stop_signal = signum

        for signum in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(signum, request_stop)

    def _stop_requested(self) -> bool:
        """True on every rank as soon as any rank received a stop signal (one scalar all-reduce)."""
        flag = torch.tensor([float(self.stop_signal)], device=self.device)
        if dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def train(self) -> List[Dict[str, float]]:
        """Run to ``train.iterations``; returns the per-iteration log records of this call.

        A stop signal ends the loop early after saving a checkpoint (when a save_dir is set) and sets
        ``stopped_early`` on every rank."""
        cfg = self.cfg
        self._install_stop_handlers()
        history = []
        tokens_per_iteration = cfg.train.global_batch_size * cfg.data.seq_length
        self.logger.open_progress(cfg.train.iterations, self.iteration, cfg.mode)
        window_start, window_iters = time.perf_counter(), 0
        while self.iteration < cfg.train.iterations:
            record = self.train_step()
            window_iters += 1
            record.update(iteration=self.iteration, lr=self.engine.get_lr()[0])
            grad_norm = self.engine.get_global_grad_norm()
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            history.append(record)
            self.logger.advance(record)
            self._check_finite(record)
            if self.iteration % cfg.logging.log_interval == 0 or self.iteration == cfg.train.iterations:
                record.update(throughput(window_iters, time.perf_counter() - window_start, tokens_per_iteration,
                                         cfg.data.seq_length, self.flops_per_token, self.hardware_flops_per_token,
                                         dist.get_world_size(), self.peak_tflops))
                self.logger.record(record)
                window_start, window_iters = time.perf_counter(), 0
            if cfg.logging.eval_interval and self.iteration % cfg.logging.eval_interval == 0 and self.valid_data:
                self.logger.record({"iteration": self.iteration,
                                    **{f"valid/{k}": v for k, v in self.evaluate().items()}})
            if cfg.checkpoint.save_dir and cfg.checkpoint.save_interval and \
                    self.iteration % cfg.checkpoint.save_interval == 0:
                self.save()
            if self._stop_requested():
                self.stopped_early = True
                self.logger.record({"iteration": self.iteration, "stopped_by_signal": float(self.stop_signal)})
                break
        self.logger.close_progress()
        if cfg.checkpoint.save_dir and ckpt.latest_tag(cfg.checkpoint.save_dir) != ckpt.tag_for(self.iteration):
            self.save()
        return history

    def _check_finite(self, record: Dict[str, float]) -> None:
        """DeepSpeed applies no optimizer step when the gradient norm is not finite; such a step is
        allowed ``train.skip_nonfinite_steps`` times, then the run stops before it saves anything,
        leaving the newest good checkpoint as it was."""
        bad = nonfinite_parts(record)
        if not bad:
            return
        self.nonfinite_steps += 1
        allowed = self.cfg.train.skip_nonfinite_steps
        if self.nonfinite_steps <= allowed:
            self.log(f"warning: iteration {self.iteration}: non-finite {', '.join(bad)}: optimizer step skipped "
                     f"({self.nonfinite_steps} of {allowed} allowed by train.skip_nonfinite_steps)")
            return
        save_dir = self.cfg.checkpoint.save_dir
        latest = ckpt.latest_tag(save_dir) if save_dir and os.path.isdir(save_dir) else None
        kept = f"the newest good checkpoint is {os.path.join(save_dir, latest)}" if latest else "no checkpoint saved"
        raise TrainingDiverged(f"iteration {self.iteration}: non-finite {', '.join(bad)}; stopped before saving "
                               f"({kept}); lower optimizer.lr, or skip such steps with train.skip_nonfinite_steps")

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> str:
        import yaml

        state = {"iteration": self.iteration, "rng": ckpt.rng_state(), "loader": self.train_loader.state_dict()}
        text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        if self.compression is not None and dist.get_rank() == 0:   # published before the checkpoint
            keep_copy(self.cfg.vocab_compression.artifact, self.cfg.checkpoint.save_dir)
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
        tag = ckpt.resume_tag(save_dir, self.cfg.checkpoint.load_tag)
        if tag is None:
            return
        try:
            state = load_engine_checkpoint(self.engine, self.grid, save_dir, tag, self.log)   # at any DP size
        except CheckpointError as e:   # a damaged or tampered file: name the way out
            raise CheckpointError(f"{e}; {ckpt.other_checkpoints(save_dir, damaged=tag)}") from None
        ckpt.set_rng_state(state["rng"])
        self.train_loader.load_state_dict(self._compatible_loader_state(state["loader"], save_dir))
        self.iteration = state["iteration"]
        self.logger.resume_at(self.iteration)
        self.log(f"resumed from {os.path.join(save_dir, tag)} at iteration {self.iteration}")

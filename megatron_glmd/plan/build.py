"""The plan of one layout: each stage's layers, FLOPs, memory and time, and the run's totals."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..config import ConfigError, ModelConfig, RunConfig
from ..config.deepspeed import deepspeed_config
from ..model.flops import StageFlops, training_flops_per_token
from ..model.partition import StageLayers, partition_flops, run_partition
from . import PlanError
from .checkpointing import CheckpointChoice, resolve_checkpointing
from .cost import StageShape, StageTime, StepTime, dp_seconds, stage_time, tie_seconds
from .deepspeed_state import DTYPE_BYTES, FP32, optimizer_state
from .hardware import Hardware
from .launches import LayerLaunches, layer_launches
from .layout import check_layout, check_teacher, crosses_nodes, stage_hosts, stage_ranks
from .memory import GiB, StageMemory, stage_memory, stage_vector_parameter_count


@dataclass
class StagePlan:
    pp_rank: int
    ranks: Tuple[int, int]               # inclusive
    nodes: List[str]
    layers: StageLayers                  # [start, end) of the student and of the teacher
    flops: StageFlops                    # hardware FLOPs per token
    memory: StageMemory
    time: Optional[StageTime]            # per micro-batch; None without a time model


@dataclass
class LaunchPlan:
    nodes: int
    gpus_per_node: int
    hosts: List[str]
    tp: int
    pp: int
    dp: int
    global_batch: int
    micro_batch: int
    accumulation: int
    seq_length: int
    iterations: int
    precision: str
    checkpoint_activations: bool      # resolved (train.checkpoint_activations may say auto)
    checkpointing: CheckpointChoice   # how it was decided
    student: ModelConfig
    teacher: Optional[ModelConfig]
    stages: List[StagePlan]
    deepspeed: dict                   # the configuration the trainer passes to deepspeed.initialize
    hardware: Hardware
    model_flops_per_token: int        # student forward + backward, teacher forward (MFU)
    hardware_flops_per_token: int     # the same + recompute, padded vocabulary of the TP shards (HFU)
    step: Optional[StepTime]

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def bubble(self) -> float:
        """Idle fraction of a 1F1B step: (p − 1) / (m + p − 1)."""
        return (self.pp - 1) / (self.accumulation + self.pp - 1)

    @property
    def tokens(self) -> int:
        return self.iterations * self.global_batch * self.seq_length

    @property
    def flops_spread(self) -> Tuple[float, float]:
        """(max / mean − 1, min / mean − 1) of the stages' hardware FLOPs."""
        totals = [s.flops.total for s in self.stages]
        mean = sum(totals) / len(totals)
        return max(totals) / mean - 1, min(totals) / mean - 1

    @property
    def peak_stage(self) -> StagePlan:
        return max(self.stages, key=lambda s: s.memory.total_bytes)

    @property
    def needed_gib(self) -> float:
        return self.peak_stage.memory.total_bytes / GiB + self.hardware.reserve_gib

    @property
    def fits(self) -> bool:
        return self.hardware.gpu_memory_gib <= 0 or self.needed_gib <= self.hardware.gpu_memory_gib

    @property
    def launch_bound_stages(self) -> List[int]:
        return [s.pp_rank for s in self.stages if s.time is not None and s.time.launch_bound]

    @property
    def hours(self) -> Optional[float]:
        return None if self.step is None else self.iterations * self.step.total / 3600

    def utilisation(self, flops_per_token: int) -> Optional[float]:
        if self.step is None:
            return None
        step_flops = flops_per_token * self.global_batch * self.seq_length
        return step_flops / (self.step.total * self.world * self.hardware.peak_tflops * 1e12)

    @property
    def mfu(self) -> Optional[float]:
        return self.utilisation(self.model_flops_per_token)

    @property
    def hfu(self) -> Optional[float]:
        return self.utilisation(self.hardware_flops_per_token)


def layer_partition(cfg: RunConfig, teacher: Optional[ModelConfig]) -> List[StageLayers]:
    """The partition the engine builds for this run (:func:`~megatron_glmd.model.partition.run_partition`);
    ``cfg``'s checkpointing resolved."""
    try:
        return run_partition(cfg, teacher)
    except ConfigError as e:
        raise PlanError(str(e)) from None


def build_plan(cfg: RunConfig, *, nodes: int, gpus_per_node: int, teacher: Optional[ModelConfig] = None,
               hosts: Optional[Sequence[str]] = None, hardware: Hardware = Hardware(),
               launches: Optional[LayerLaunches] = None) -> LaunchPlan:
    """Check the layout and model each stage's memory and time and the run's cost; raises PlanError.
    ``train.checkpoint_activations: auto`` is resolved for this layout (:mod:`.checkpointing`).
    ``launches``: kernels per layer, by default the model family's (:func:`.launches.layer_launches`)."""
    dp = check_layout(cfg, nodes, gpus_per_node)
    check_teacher(cfg, teacher)
    try:
        cfg, choice = resolve_checkpointing(cfg, teacher, dp, hardware.gpu_memory_gib, hardware.reserve_gib)
    except ConfigError as e:
        raise PlanError(str(e)) from None
    tp, pp, t, seq = cfg.parallel.tp, cfg.parallel.pp, cfg.train, cfg.data.seq_length
    hosts = list(hosts) if hosts else [f"node{i}" for i in range(nodes)]
    if len(hosts) != nodes:
        raise PlanError(f"the node list names {len(hosts)} hosts, but nodes={nodes}")
    layers = layer_partition(cfg, teacher)
    launches = launches or layer_launches(cfg.model)
    flops = partition_flops(cfg.model, teacher, layers, seq_length=seq, recompute=t.checkpoint_activations, tp=tp)
    act_bytes, grad_bytes = DTYPE_BYTES[t.precision], FP32   # DP and tie reductions in fp32 (communication_data_type)
    timed = hardware.peak_tflops > 0
    span = tp * dp
    stages = []
    for k in range(pp):
        first, last = stage_ranks(k, tp, dp)
        shape = StageShape(layers[k], first=k == 0, last=k == pp - 1,
                           recv_inter_node=k > 0 and crosses_nodes([first - span, first], gpus_per_node),
                           send_inter_node=k < pp - 1 and crosses_nodes([last, last + span], gpus_per_node))
        time = stage_time(hardware, flops[k], shape, cfg.model, teacher, tp=tp, micro_batch=t.micro_batch_size,
                          seq=seq, recompute=t.checkpoint_activations, act_bytes=act_bytes,
                          launches=launches) if timed else None
        stages.append(StagePlan(pp_rank=k, ranks=(first, last), nodes=stage_hosts(k, tp, dp, gpus_per_node, hosts),
                                layers=layers[k], flops=flops[k],
                                memory=stage_memory(cfg, teacher, layers[k], k, dp, t.checkpoint_activations),
                                time=time))
    step = None
    if timed:
        weight_bytes = optimizer_state(t.precision).weight_bytes
        dp_comm = max(dp_seconds(hardware, param_groups(cfg, s), dp, weight_bytes, crosses_nodes(s.ranks, gpus_per_node))
                      for s in stages)
        tie_inter = crosses_nodes([0, (pp - 1) * span], gpus_per_node)
        step = StepTime(stages=[s.time for s in stages], micro_batches=t.accumulation_steps(dp), dp_comm=dp_comm,
                        tie_comm=tie_seconds(hardware, cfg.model, tp, pp, grad_bytes, tie_inter))
    return LaunchPlan(
        nodes=nodes, gpus_per_node=gpus_per_node, hosts=hosts, tp=tp, pp=pp, dp=dp,
        global_batch=t.global_batch_size, micro_batch=t.micro_batch_size, accumulation=t.accumulation_steps(dp),
        seq_length=seq, iterations=t.iterations, precision=t.precision,
        checkpoint_activations=t.checkpoint_activations, checkpointing=choice, student=cfg.model, teacher=teacher, stages=stages,
        deepspeed=deepspeed_config(cfg, dp), hardware=hardware,
        model_flops_per_token=training_flops_per_token(cfg.model, teacher, seq, recompute=False),
        hardware_flops_per_token=training_flops_per_token(cfg.model, teacher, seq, t.checkpoint_activations, tp=tp),
        step=step)


def param_groups(cfg: RunConfig, stage: StagePlan) -> Tuple[int, int]:
    """Elements of the optimizer's two param groups on one GPU of ``stage``: (decay, no decay)."""
    vectors = stage_vector_parameter_count(cfg.model, cfg.parallel.tp, stage.pp_rank == cfg.parallel.pp - 1,
                                           stage.layers.student)
    return stage.memory.student_params - vectors, vectors

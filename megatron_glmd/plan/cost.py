"""The time model of one training step under DeepSpeed's 1F1B pipeline with ZeRO-1.

Per micro-batch, one GPU of stage k spends (all transfers blocking, as in DeepSpeed's engine)::

    t_k = F_k·b·s / (TP · peak · efficiency)               compute: the stage's hardware FLOPs
        + Σ all-reduces of b·s·h 16-bit values over TP      2 per layer forward (attention and MLP
                                                            outputs), 2 more in backward, 2 more in
                                                            the recompute; teacher layers forward only;
                                                            the embeddings' forward, the logits' backward
        + the pipeline sends and receives of the stage      student + teacher hidden forward,
                                                            the student's gradient backward

A decoder layer (:func:`layer_all_reduces`) all-reduces 3 gradients of b·s·h in backward, one per
column-parallel input (Q, K|V, gate|up), where GLM's fused QKV makes 2; with its KV heads
replicated (TP a multiple of ``num_key_value_heads``) each layer's backward also all-reduces the
K|V weight's gradient (2·kv·d·h, + 2·kv·d with biases) over TP. An untied decoder head has no
embedding tie between the first and the last stage.

The host must also issue the stage's kernels: ``launches × launch_us`` per micro-batch
(:mod:`.launches`: each student layer's forward, backward and recompute, each teacher layer's
forward). It runs ahead of the GPU asynchronously, so a micro-batch takes
``max(compute + TP all-reduces, host launches) + sends``; a stage whose host time exceeds its GPU
time is launch-bound, and the report marks it so.

A step of m micro-batches on p stages takes ``(m + p − 1) · max_k t_k`` (1F1B: the slowest stage
sets the pace, and p − 1 of its slots are bubble), then the tied word embedding's gradient
all-reduce between the first and the last stage, then DeepSpeed's DP reduction: an **all-reduce**
of the fp32 gradients (``communication_data_type``; BF16_Optimizer and ZeRO stage 1 alike all-reduce
rather than reduce-scatter, :mod:`.deepspeed_state`), one collective per bucket, and an all-gather
of the updated weights in their dtype, one per param group.

A collective of B bytes over n ranks costs ``latency + c·(n − 1)/n · B / bus bandwidth`` with
c = 2 for all-reduce and 1 for reduce-scatter and all-gather (NCCL's bus-bandwidth convention: a
ring all-reduce moves 2(n − 1)/n · B per rank); a point-to-point transfer ``latency + B / bandwidth``.
Traffic inside a node uses the NVLink figure, traffic that leaves a node the InfiniBand one (see
:mod:`.hardware`).

Not modelled: overlap of communication with compute (the engine has none), GEMM efficiency that
falls with smaller TP shards, the optimizer step, the loss kernel, data loading, stragglers, the
launches of the embeddings, logits and loss (a handful per micro-batch against ~90 per layer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import ModelConfig
from ..model.flops import StageFlops
from ..model.partition import StageLayers
from .deepspeed_state import FP32, allreduce_buckets
from .hardware import Hardware
from .launches import COUNTS, LayerLaunches

ALL_REDUCE, HALF_COLLECTIVE = 2.0, 1.0


def collective_seconds(hw: Hardware, nbytes: float, ranks: int, factor: float, inter_node: bool) -> float:
    if ranks <= 1:
        return 0.0
    bandwidth = (hw.ib_gbps if inter_node else hw.nvlink_gbps) * 1e9
    return hw.comm_latency_us * 1e-6 + factor * (ranks - 1) / ranks * nbytes / bandwidth


def send_seconds(hw: Hardware, nbytes: float, inter_node: bool) -> float:
    bandwidth = (hw.ib_gbps if inter_node else hw.nvlink_gbps) * 1e9
    return hw.comm_latency_us * 1e-6 + nbytes / bandwidth


@dataclass(frozen=True)
class StageTime:
    """Seconds per micro-batch on one GPU of a stage."""

    compute: float
    tp_comm: float
    p2p: float
    launch: float = 0.0       # host time to issue the stage's kernels

    @property
    def gpu(self) -> float:
        return self.compute + self.tp_comm

    @property
    def launch_bound(self) -> bool:
        return self.launch > self.gpu

    @property
    def launch_wait(self) -> float:
        """What the host's launches add beyond the GPU's own time."""
        return max(0.0, self.launch - self.gpu)

    @property
    def total(self) -> float:
        return max(self.gpu, self.launch) + self.p2p


@dataclass(frozen=True)
class StageShape:
    """What the time of a stage depends on besides its FLOPs."""

    layers: StageLayers
    first: bool
    last: bool
    recv_inter_node: bool     # the link to the previous stage leaves the node
    send_inter_node: bool     # the link to the next stage leaves the node


def stage_time(hw: Hardware, flops: StageFlops, shape: StageShape, student: ModelConfig,
               teacher: Optional[ModelConfig], *, tp: int, micro_batch: int, seq: int, recompute: bool,
               act_bytes: int, launches: LayerLaunches = COUNTS["glm", False, False]) -> StageTime:
    tokens = micro_batch * seq
    compute = flops.total * tokens / (tp * hw.peak_tflops * 1e12 * hw.matmul_efficiency)

    def all_reduces(count: int, hidden: int) -> float:
        return count * collective_seconds(hw, tokens * hidden * act_bytes, tp, ALL_REDUCE, False)

    n_s = shape.layers.student[1] - shape.layers.student[0]
    forward, backward = layer_all_reduces(student)
    tp_comm = all_reduces(n_s * (forward * (2 if recompute else 1) + backward) + shape.first + shape.last,
                          student.hidden_size)
    kv_grad = replicated_kv_grad_elements(student, tp)
    if kv_grad:
        tp_comm += n_s * collective_seconds(hw, kv_grad * act_bytes, tp, ALL_REDUCE, False)
    kernels = n_s * launches.student(recompute)
    if teacher is not None and shape.layers.teacher is not None:
        n_t = shape.layers.teacher[1] - shape.layers.teacher[0]
        tp_comm += all_reduces(layer_all_reduces(teacher)[0] * n_t + shape.first, teacher.hidden_size)
        kernels += n_t * launches.teacher()
    forward = tokens * act_bytes * (student.hidden_size + (teacher.hidden_size if teacher is not None else 0))
    backward = tokens * act_bytes * student.hidden_size
    p2p = 0.0
    if not shape.first:        # receive the forward, send the gradient back
        p2p += send_seconds(hw, forward, shape.recv_inter_node) + send_seconds(hw, backward, shape.recv_inter_node)
    if not shape.last:         # send the forward, receive the gradient
        p2p += send_seconds(hw, forward, shape.send_inter_node) + send_seconds(hw, backward, shape.send_inter_node)
    return StageTime(compute=compute, tp_comm=tp_comm, p2p=p2p, launch=kernels * hw.launch_us * 1e-6)


def layer_all_reduces(config: ModelConfig) -> Tuple[int, int]:
    """TP all-reduces of b·s·h activations per layer: (forward, backward). Forward: the attention and
    MLP outputs (row-parallel). Backward: the input gradient of each column-parallel matmul: GLM's
    QKV and MLP-in (2), a decoder's Q, K|V (or the replicated K|V's input) and gate|up (3)."""
    return (2, 3) if config.is_decoder else (2, 2)


def replicated_kv_grad_elements(config: ModelConfig, tp: int) -> int:
    """Elements of a decoder layer's K|V weight (+ bias) gradient all-reduced over TP in backward
    when every rank holds all KV heads (TP a multiple of kv, ``model/decoder_layers.py``); else 0."""
    kv = config.num_key_value_heads if config.is_decoder else None
    if tp == 1 or kv is None or kv % tp == 0:
        return 0
    rows = 2 * kv * config.head_dim
    return rows * config.hidden_size + (rows if config.qkv_bias else 0)


@dataclass(frozen=True)
class StepTime:
    stages: List[StageTime]
    micro_batches: int
    dp_comm: float            # DP gradient all-reduce + weight all-gather of the slowest stage
    tie_comm: float           # word-embedding gradient all-reduce between first and last stage

    @property
    def pp(self) -> int:
        return len(self.stages)

    @property
    def slowest(self) -> int:
        return max(range(self.pp), key=lambda k: self.stages[k].total)

    @property
    def pipeline(self) -> float:
        return (self.micro_batches + self.pp - 1) * self.stages[self.slowest].total

    @property
    def total(self) -> float:
        return self.pipeline + self.tie_comm + self.dp_comm

    def parts(self) -> Dict[str, float]:
        """The step split into parts that add up to ``total`` (the slowest stage's view)."""
        t, m = self.stages[self.slowest], self.micro_batches
        return {"compute": m * t.compute, "TP all-reduce": m * t.tp_comm, "launch wait": m * t.launch_wait,
                "pipeline sends": m * t.p2p, "bubble": (self.pp - 1) * t.total, "DP reduce": self.dp_comm,
                "embedding tie": self.tie_comm}


def dp_seconds(hw: Hardware, group_numels: Sequence[int], dp: int, weight_bytes: int, inter_node: bool) -> float:
    """DeepSpeed's DP reduction of one stage: fp32 gradient all-reduces, one per bucket of
    :func:`~.deepspeed_state.allreduce_buckets`, then an all-gather of the updated weights per param group."""
    reduce = sum(collective_seconds(hw, FP32 * sum(b), dp, ALL_REDUCE, inter_node)
                 for b in allreduce_buckets(group_numels))
    gather = sum(collective_seconds(hw, weight_bytes * n, dp, HALF_COLLECTIVE, inter_node)
                 for n in group_numels if n)
    return reduce + gather


def tie_seconds(hw: Hardware, student: ModelConfig, tp: int, pp: int, grad_bytes: int, inter_node: bool) -> float:
    """All-reduce of the word embedding's gradient shard (and of a factorised embedding's projection)
    between the first and the last stage; none for an untied decoder head (``lm_head`` is its own)."""
    if pp == 1 or (student.is_decoder and not student.tie_word_embeddings):
        return 0.0
    width = student.embedding_size or student.hidden_size
    shard = student.padded_vocab_size(tp) // tp * width + (width * student.hidden_size if student.embedding_size else 0)
    return collective_seconds(hw, shard * grad_bytes, 2, ALL_REDUCE, inter_node)

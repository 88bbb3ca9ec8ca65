"""What DeepSpeed keeps per trained parameter and moves over DP, read from its source (0.19.8).

The trainer's DeepSpeed configuration (:func:`megatron_glmd.config.deepspeed.deepspeed_config`)
sets ZeRO stage 1, ``communication_data_type: fp32`` and, under bf16, ``grad_accum_dtype: fp32``.
``DeepSpeedEngine._do_optimizer_sanity_check`` (``runtime/engine.py`` l. 2294-2326) then wraps
the Adam optimizer in

* **bf16**: ``BF16_Optimizer`` (bf16 model, fp32 gradient accumulation, ZeRO stage 1, no
  offload: ``return BFLOAT16``, l. 2310), ``runtime/bf16_optimizer.py``;
* **fp16, fp32**: ``DeepSpeedZeroOptimizer`` at stage 1 (``return ZERO_OPTIMIZATION``, l. 2311),
  ``runtime/zero/stage_1_and_2.py``.

Per trained parameter and GPU (n parameters on the GPU, DP ranks d):

bf16 (``BF16_Optimizer._setup_for_real_optimizer``, l. 152-238)
    2 B  bf16 weights, flattened per param group (l. 166-171)
    2 B  bf16 gradients: the pipeline engine zeroes them before every backward
         (``PipelineEngine._exec_backward_pass``, ``runtime/pipe/engine.py`` l. 840, calling
         ``clear_lp_grads(set_to_none=False)``, ``bf16_optimizer.py`` l. 612-623) and frees them only
         after the step (``_take_model_step``, ``engine.py`` l. 3526, ``zero_grad(set_to_none=True)``,
         l. 625): they live through every backward pass
    4 B  fp32 accumulated gradients, one flat buffer per group of the *whole* group, not a DP
         shard (``torch.zeros_like(bf16_groups_flat[i], dtype=grad_acc_dtype)``, l. 191)
    12/d B  fp32 master partition (l. 182) and Adam's two fp32 moments; the step points the
         master's ``.grad`` at a view of the accumulator (l. 417), no copy
    8 + 12/d in all (6 + 12/d assumed before: the fp32 accumulator was counted, the bf16 gradients
    were not).

fp16, fp32 (``DeepSpeedZeroOptimizer``, stage 1, default ``zero_optimization`` settings)
    2b B  weights and gradients in the model's dtype (b = 2 or 4 bytes)
    12/d B  fp32 master partition, cloned from the weights at either dtype (l. 557-561), and
         Adam's moments
    b/d B  the flat gradient partition built at the accumulation boundary (``get_flat_partition``,
         l. 1047), and for fp16 its fp32 copy in ``step`` (l. 3118): counted with the DP transient
    a gradient bucket of ``reduce_bucket_size`` = 5e8 elements in the model's dtype, allocated on
    the first gradient hook of a step (``setup_buckets``, l. 3256-3270) and released after the
    reduction (l. 1061), and with pipeline parallelism one more of 5e8 fp32 elements
    (``reduce_gradients``, l. 962-969, the ``communication_data_type``)

DP reduction. Every path **all-reduces** fp32 gradients over DP rather than reduce-scattering
them: bf16 through ``PipelineEngine._bf16_reduce_grads`` (``pipe/engine.py`` l. 297) →
``buffered_allreduce_fallback`` (``engine.py`` l. 3921) on the optimizer's fp32 flat buffers →
``allreduce_no_retain`` (l. 3828), which fills a bucket until it holds more than 5e8 elements
(``MEMORY_OPT_ALLREDUCE_SIZE``, l. 151) → ``allreduce_bucket`` (l. 3795-3821): ``self.flatten(bucket)``
concatenates the bucket's tensors into a fresh fp32 tensor (torch's ``_flatten_dense_tensors``
copies two or more tensors and views a single one) and ``dist.all_reduce``s it. With the
trainer's two param groups (decay, no decay: ``engine/optim.py``) and fewer than 5e8 elements in
the first, both land in one bucket: a transient fp32 copy of the stage's whole gradient (4 B per
parameter, ≈ 1 GiB on stage 0 at 10B→2B). fp16/fp32 stage 1 reduces its bucket with
``use_multi_rank_bucket_allreduce`` (default True, ``zero/config.py`` l. 119) → an all-reduce too
(``average_tensor``, ``stage_1_and_2.py`` l. 1695-1711). Afterwards each rank's updated partition is
all-gathered in the weights' dtype (``update_lp_params`` → ``all_gather_dp_groups``,
``bf16_optimizer.py`` l. 593-603; the same helper in stage 1's ``step``, ``stage_1_and_2.py`` l. 3155).

Not modelled: the alignment padding of the flat groups (at most ``2·d`` elements per group), the
Adam implementation's temporaries in ``step``, the fp32 tied-embedding gradient all-reduce's
buffers (the reduction itself is timed in :mod:`.cost`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

FP32 = 4
ALLREDUCE_BUCKET_ELEMENTS = 500_000_000       # engine.py MEMORY_OPT_ALLREDUCE_SIZE (l. 151)
ZERO_REDUCE_BUCKET_ELEMENTS = 500_000_000     # zero/config.py reduce_bucket_size default (l. 113)
MASTER_AND_ADAM = 12                           # fp32 master + two fp32 Adam moments, sharded over DP
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class OptimizerState:
    """Bytes per trained parameter on one GPU of a stage, and what the DP reduction adds."""

    precision: str
    optimizer: str                # the DeepSpeed wrapper that holds the state
    weights_grads: int            # per parameter, on every DP rank: weights, gradients, fp32 accumulator
    sharded: int                  # per parameter, divided by DP: fp32 master and Adam moments
    weight_bytes: int             # the dtype of the weights the DP all-gather moves
    grad_bucket_elements: int     # elements of the gradient bucket held through backward (fp16/fp32)

    def grad_bucket_bytes(self) -> int:
        return self.grad_bucket_elements * self.weight_bytes


def optimizer_state(precision: str) -> OptimizerState:
    """The per-parameter state of the optimizer DeepSpeed picks for ``precision`` (module docstring)."""
    if precision == "bf16":
        return OptimizerState(precision, "BF16_Optimizer", weights_grads=2 + 2 + FP32, sharded=MASTER_AND_ADAM,
                              weight_bytes=2, grad_bucket_elements=0)
    b = DTYPE_BYTES[precision]
    return OptimizerState(precision, "DeepSpeedZeroOptimizer stage 1", weights_grads=2 * b, sharded=MASTER_AND_ADAM,
                          weight_bytes=b, grad_bucket_elements=ZERO_REDUCE_BUCKET_ELEMENTS)


def allreduce_buckets(group_numels: Sequence[int], limit: int = ALLREDUCE_BUCKET_ELEMENTS) -> List[List[int]]:
    """The buckets ``allreduce_no_retain`` forms from tensors of these sizes: append, then flush once
    the bucket holds more than ``limit`` elements; the rest is the last bucket."""
    buckets, current, numel = [], [], 0
    for n in group_numels:
        if n == 0:
            continue            # empty param groups are dropped (engine.py _configure_optimizer, l. 2348)
        current.append(n)
        numel += n
        if numel > limit:
            buckets.append(current)
            current, numel = [], 0
    if current:
        buckets.append(current)
    return buckets


def dp_transient_bytes(precision: str, group_numels: Sequence[int], dp: int) -> int:
    """Bytes that exist only while the DP reduction and the step run, on top of the model state.

    bf16: the largest fp32 ``flatten`` copy (buckets of two or more tensors; one tensor is viewed).
    fp16/fp32: stage 1's fp32 bucket of the pipelined reduction and the flat gradient partition
    (plus its fp32 copy under fp16).
    """
    if precision == "bf16":
        return max((FP32 * sum(b) for b in allreduce_buckets(group_numels) if len(b) > 1), default=0)
    b = DTYPE_BYTES[precision]
    n = sum(group_numels)
    partition = -(-n // dp)
    return ZERO_REDUCE_BUCKET_ELEMENTS * FP32 + partition * (b + (FP32 if b != FP32 else 0))

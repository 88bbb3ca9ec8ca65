"""Fused vocab-parallel softmax-KL loss for GLMD's word-prediction distillation
(docs/design.md, "The fused loss kernel").

    loss_i = [tau²] · KL( softmax(t_i / tau) ‖ softmax(s_i / tau) )

over the global vocabulary, where each rank of `group` holds a `[N, V_r]` shard of the student
(s) and teacher (t) logits. The teacher is a constant. Per-row statistics are combined with one
all-gather (`softmax_kl_stats`); the gradient needs no communication.

Dispatch (`backend_name`): the Triton kernels for CUDA tensors (an error if triton cannot be
imported, unless GLMD_SOFTMAX_KL_BACKEND=torch) and for CPU tensors when triton was imported
under `TRITON_INTERPRET=1`; the chunked PyTorch path for other CPU tensors, for fp64 inputs (a
reference dtype, e.g. for gradcheck) on any device, and everywhere under
GLMD_SOFTMAX_KL_BACKEND=torch. Both share one contract (`softmax_kl_stats`).

The gradient is computed in backward, not written during forward as Liger-Kernel does: forward
reads both inputs once (statistics), backward reads them again and writes the gradient with the
upstream gradient already folded in. That is the 10·N·V_r-byte minimum for bf16 with no extra
scaling pass, and a forward without autograd (evaluation) reads the inputs only once. The price:
both inputs stay referenced until backward, so the teacher's logits are not freed right after the
forward (in a 1F1B pipeline the last stage runs that backward immediately).
"""
from __future__ import annotations

import math
import os

import torch
from torch.autograd.function import once_differentiable

from . import softmax_kl_stats, softmax_kl_torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_REDUCTIONS = ("none", "sum", "mean")


BACKEND_ENV = "GLMD_SOFTMAX_KL_BACKEND"
_BACKEND_CHOICES = ("auto", "torch")


def _import_triton_path():
    from . import softmax_kl_triton
    return softmax_kl_triton


def backend_name(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None = None) -> str:
    """"triton" or "torch": the path `softmax_kl` takes for these inputs (see `select_backend`)."""
    tensors = [student_logits] + ([teacher_logits] if teacher_logits is not None else [])
    return select_backend(student_logits.device.type,
                          any(x.dtype == torch.float64 for x in tensors))


def select_backend(device_type: str, fp64: bool, import_triton=_import_triton_path) -> str:
    """fp64 inputs: torch. CPU tensors: torch, or triton when triton was first imported under
    TRITON_INTERPRET=1. CUDA tensors: triton, and an ImportError naming the package when triton
    cannot be imported: the chunked PyTorch path launches a dozen small kernels per chunk, and
    falling back to it silently would make a GPU run slow without saying so. The environment
    variable GLMD_SOFTMAX_KL_BACKEND=torch selects the PyTorch path everywhere (the explicit
    opt-out); unset or "auto": the above.
    """
    requested = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if requested not in _BACKEND_CHOICES:
        raise ValueError(f"{BACKEND_ENV}: {requested!r} is not one of {_BACKEND_CHOICES}")
    on_cpu = device_type == "cpu"
    if requested == "torch" or fp64:
        return "torch"
    if not (device_type == "cuda" or on_cpu and os.environ.get("TRITON_INTERPRET", "0") == "1"):
        return "torch"
    try:
        module = import_triton()
    except ImportError as e:
        if on_cpu:
            return "torch"
        raise ImportError(
            f"triton: softmax_kl on CUDA tensors needs the 'triton' package, which cannot be "
            f"imported ({e}); install it, or set {BACKEND_ENV}=torch to use the slower "
            f"chunked PyTorch path") from e
    if on_cpu:  # triton decides interpret mode when the kernels are defined (at that import)
        return "triton" if module.INTERPRETED else "torch"
    return "triton"


def _backend(name: str):
    if name == "triton":
        from . import softmax_kl_triton
        return softmax_kl_triton
    return softmax_kl_torch


class SoftmaxKLFunction(torch.autograd.Function):
    """Autograd wrapper over `[N, V_r]` shards; see `softmax_kl` for the arguments."""

    @staticmethod
    def forward(ctx, student, teacher, keep, group, vocab_end, tau, scale_by_t2, reduction,
                backend):
        impl = _backend(backend)
        stats = impl.row_stats(student, teacher, keep, vocab_end, tau)
        kl, lse_s, lse_t = softmax_kl_stats.combine(softmax_kl_stats.gather(stats, group), tau)
        per_row = kl * (tau * tau if scale_by_t2 else 1.0)
        count = None
        if keep is not None:
            per_row = torch.where(keep, per_row, torch.zeros_like(per_row))
            count = keep.sum()
        ctx.save_for_backward(student, teacher, lse_s, lse_t, keep)
        ctx.params = (vocab_end, tau, scale_by_t2, reduction, backend, count)
        if reduction == "none":
            return per_row
        total = per_row.sum()
        if reduction == "mean":
            denom = count.clamp(min=1) if count is not None else max(per_row.numel(), 1)
            total = total / denom
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        student, teacher, lse_s, lse_t, keep = ctx.saved_tensors
        vocab_end, tau, scale_by_t2, reduction, backend, count = ctx.params
        n = student.shape[0]
        grad_out = grad_out.to(lse_s.dtype)
        # d(tau² KL)/ds = tau (p_s - p_t); d KL/ds = (p_s - p_t) / tau
        coef = grad_out * (tau if scale_by_t2 else 1.0 / tau)
        if reduction == "mean":
            coef = coef / (count.clamp(min=1) if count is not None else max(n, 1))
        coef = coef.expand(n).contiguous() if coef.dim() == 0 else coef.contiguous()
        if keep is not None:
            coef = torch.where(keep, coef, torch.zeros_like(coef))
        grad = _backend(backend).grad(student, teacher, lse_s, lse_t, coef, vocab_end, tau)
        return grad, None, None, None, None, None, None, None, None


def _check_inputs(student, teacher, temperature, mask, vocab_end, reduction):
    for name, x in (("student_logits", student), ("teacher_logits", teacher)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"softmax_kl: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"softmax_kl: {name} must be float16, bfloat16, float32 or float64, "
                            f"got {x.dtype}")
        if x.dim() < 1 or x.shape[-1] < 1:
            raise ValueError(f"softmax_kl: {name} must be [..., V_r] with V_r >= 1, "
                             f"got shape {tuple(x.shape)}")
    if student.shape != teacher.shape:
        raise ValueError(f"softmax_kl: student_logits shape {tuple(student.shape)} != "
                         f"teacher_logits shape {tuple(teacher.shape)}")
    if student.device != teacher.device:
        raise ValueError(f"softmax_kl: student_logits on {student.device} but teacher_logits "
                         f"on {teacher.device}")
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"softmax_kl: temperature must be a finite number > 0, got {temperature!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"softmax_kl: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    v = student.shape[-1]
    if vocab_end is not None and (isinstance(vocab_end, bool) or not isinstance(vocab_end, int)
                                  or not 0 <= vocab_end <= v):
        raise ValueError(f"softmax_kl: vocab_end must be an int in [0, {v}] (the shard width), "
                         f"got {vocab_end!r}")
    if mask is not None:
        lead = tuple(student.shape[:-1])
        n = math.prod(lead)
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"softmax_kl: mask must be a torch.Tensor, got {type(mask).__name__}")
        if tuple(mask.shape) not in (lead, (n,)):
            raise ValueError(f"softmax_kl: mask shape {tuple(mask.shape)} must be {lead} or "
                             f"({n},) (one entry per token of the logits)")
        if mask.device != student.device:
            raise ValueError(f"softmax_kl: mask on {mask.device} but student_logits on "
                             f"{student.device}")
        if mask.is_complex():
            raise TypeError(f"softmax_kl: mask must be bool or 0/1 numbers, got {mask.dtype}")


def softmax_kl(student_logits, teacher_logits, *, temperature=1.0, mask=None, group=None,
               vocab_end=None, scale_by_t2=True, reduction="sum"):
    """GLMD word-prediction loss over vocabulary shards.

    student_logits, teacher_logits: `[N, V_r]` or `[..., V_r]` (flattened to rows), fp32, bf16
        or fp16 (fp64 runs the PyTorch path), same shape: this rank's vocabulary shard.
    temperature: tau > 0; the loss compares softmax(t/tau) and softmax(s/tau).
    mask: `[N]` (or the leading shape) bool or 0/1; tokens with 0 give loss 0 and gradient 0.
    group: process group over which the vocabulary is split; None or size 1: all local.
    vocab_end: real (non-padding) columns in this shard; columns from it on are excluded.
    scale_by_t2: multiply the loss (and so the gradient) by tau².
    reduction: "none" -> `[N]` per-token losses (fp32; fp64 for fp64 inputs), "sum" -> their
        sum, "mean" -> sum / number of unmasked tokens (0 when there are none).

    Every rank of `group` returns the same (global) loss; the gradient w.r.t. `student_logits`
    is this rank's slice of the global gradient, in the student's dtype.
    """
    _check_inputs(student_logits, teacher_logits, temperature, mask, vocab_end, reduction)
    v = student_logits.shape[-1]
    student = student_logits.reshape(-1, v)
    teacher = teacher_logits.reshape(-1, v)
    keep = None
    if mask is not None:
        keep = mask.reshape(-1)
        keep = keep if keep.dtype == torch.bool else keep != 0
    return SoftmaxKLFunction.apply(
        student, teacher, keep, group, v if vocab_end is None else vocab_end,
        float(temperature), bool(scale_by_t2), reduction,
        backend_name(student_logits, teacher_logits))

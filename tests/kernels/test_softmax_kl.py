"""softmax_kl on the chunked PyTorch (CPU) path against the naive fp64 reference."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kernels import softmax_kl
from kernels import softmax_kl_torch
from kernels.softmax_kl import backend_name
from tests.kernels.reference import assert_close_grad, grad_atol, reference

TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-5, 1e-2), torch.float16: (2e-5, 2e-3),
       torch.float64: (1e-10, 1e-10)}  # dtype -> (loss rtol, gradient rtol)


@pytest.fixture(autouse=True)
def _torch_path(monkeypatch):
    """These tests are about the PyTorch path: never let an ambient TRITON_INTERPRET pick Triton."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _logits(n, v, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g) * scale).to(dtype)
    t = (torch.randn(n, v, generator=g) * scale + 0.5).to(dtype)
    return s, t


def _check(s, t, *, temperature=1.0, mask=None, vocab_end=None, scale_by_t2=True,
           reduction="none", dtype=None, upstream=None, large_logits=False):
    """Run softmax_kl and compare loss and gradient with the reference on the real columns.
    large_logits: the gradient's bound also allows `reference.grad_atol` (logits of 1e4)."""
    dtype = dtype or s.dtype
    loss_rtol, grad_rtol = TOL[dtype]
    v = s.shape[-1]
    ve = v if vocab_end is None else vocab_end
    assert backend_name(s, t) == "torch"
    student = s.detach().clone().requires_grad_(True)
    loss = softmax_kl(student, t, temperature=temperature, mask=mask, vocab_end=vocab_end,
                      scale_by_t2=scale_by_t2, reduction=reduction)
    n = math.prod(s.shape[:-1])
    if upstream is None:
        upstream = torch.rand(n, generator=torch.Generator().manual_seed(1)) + 0.5
    ref_rows, ref_grad = reference(s.reshape(n, v)[:, :ve], t.reshape(n, v)[:, :ve],
                                   temperature=temperature, mask=mask, scale_by_t2=scale_by_t2,
                                   upstream=upstream if reduction == "none" else None)
    if reduction == "none":
        assert loss.shape == (n,)
        loss.backward(upstream.to(loss.dtype))
        torch.testing.assert_close(loss.double(), ref_rows, rtol=loss_rtol,
                                   atol=loss_rtol * float(ref_rows.abs().max()))
    else:
        count = n if mask is None else int(mask.reshape(-1).bool().sum())
        expected = ref_rows.sum() / (max(count, 1) if reduction == "mean" else 1)
        if reduction == "mean":
            ref_grad = ref_grad / max(count, 1)
        assert loss.dim() == 0
        loss.backward()
        torch.testing.assert_close(loss.double(), expected, rtol=loss_rtol,
                                   atol=loss_rtol * float(ref_rows.abs().sum()) + 1e-12)
    grad = student.grad.reshape(n, v)
    assert student.grad.dtype == s.dtype and student.grad.shape == s.shape
    assert torch.all(grad[:, ve:] == 0), "padding columns must get exactly 0 gradient"
    atol = 0.0
    if large_logits:
        coef_max = float(upstream.abs().max()) if reduction == "none" else 1.0
        atol = grad_atol(s.reshape(n, v)[:, :ve], t.reshape(n, v)[:, :ve], temperature,
                         coef_max) / (temperature if not scale_by_t2 else 1.0) ** 2
    assert_close_grad(grad[:, :ve], ref_grad, grad_rtol, atol)
    return loss.detach(), grad


@pytest.mark.parametrize("v,n", [(1, 4), (7, 5), (1271, 9), (6288, 6), (50304, 3)])
def test_vocab_widths_fp32(v, n):
    s, t = _logits(n, v)
    _check(s, t, temperature=2.0, mask=torch.arange(n) % 3 != 1)


@pytest.mark.parametrize("v", [7, 1271, 6288])
def test_padding_columns_excluded(v):
    s, t = _logits(5, v)
    ve = max(1, v - v // 3)
    s[:, ve:] = 1e4  # the padding holds values that would dominate the softmax if read
    t[:, ve:] = -1e4
    _check(s, t, temperature=1.5, vocab_end=ve)


@pytest.mark.parametrize("tau", [1.0, 2.0, 15.0])
@pytest.mark.parametrize("scale_by_t2", [True, False])
def test_temperatures(tau, scale_by_t2):
    s, t = _logits(6, 1271, scale=20.0)
    _check(s, t, temperature=tau, scale_by_t2=scale_by_t2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("v", [1271, 6288])
def test_half_precision(dtype, v):
    s, t = _logits(7, v, dtype=dtype)
    _check(s, t, temperature=2.0, mask=torch.tensor([1, 1, 0, 1, 1, 1, 0]), vocab_end=v - 5)


def test_single_token():
    s, t = _logits(1, 1271)
    _check(s, t, temperature=15.0)
    _check(s, t, reduction="sum")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_all_masked_is_zero_and_finite(reduction):
    s, t = _logits(4, 300)
    s[0] = float("nan")  # garbage on dropped rows must not leak into the loss or gradient
    s[1, :5] = float("inf")
    t[2] = float("-inf")
    student = s.clone().requires_grad_(True)
    loss = softmax_kl(student, t, mask=torch.zeros(4, dtype=torch.bool), reduction=reduction)
    loss.sum().backward()
    assert torch.all(loss == 0)
    assert torch.all(student.grad == 0)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """The PyTorch path runs chunks inline on one thread, on a thread pool with more."""
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)
    assert torch.get_num_threads() == saved


def test_garbage_on_masked_rows_does_not_leak(threads):
    s, t = _logits(5, 300)
    mask = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    s_bad, t_bad = s.clone(), t.clone()
    s_bad[1] = float("nan")
    s_bad[3, :4] = float("inf")
    t_bad[3, 4:] = float("-inf")
    student = s_bad.clone().requires_grad_(True)
    loss = softmax_kl(student, t_bad, mask=mask, reduction="none")
    loss.sum().backward()
    rows, grad = reference(s, t, mask=mask)
    torch.testing.assert_close(loss.double(), rows, rtol=1e-5, atol=1e-6)
    assert_close_grad(student.grad, grad, 1e-5)
    assert torch.all(student.grad[~mask] == 0)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions(reduction):
    s, t = _logits(8, 777)
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    _check(s, t, temperature=2.0, mask=mask, reduction=reduction)
    _check(s, t, temperature=2.0, reduction=reduction)


def test_mean_counts_unmasked_tokens_only():
    s, t = _logits(6, 50)
    mask = torch.tensor([1, 1, 0, 0, 0, 1.0])  # 0/1 floats work as a mask
    rows = softmax_kl(s, t, mask=mask, reduction="none")
    assert torch.allclose(softmax_kl(s, t, mask=mask, reduction="mean"), rows.sum() / 3)
    assert softmax_kl(s, t, mask=torch.zeros(6), reduction="mean") == 0


@pytest.mark.parametrize("tau", [1.0, 15.0])
def test_extreme_logits_stay_finite(tau):
    s, t = _logits(6, 1000)
    s[0, ::2], s[0, 1::2] = 1e4, -1e4
    t[0, ::3] = 1e4
    t[1, :] = -1e4
    t[1, 7] = 1e4
    s[2:4, 100:200] = float("-inf")  # vocabulary entries forbidden to both models
    t[2:4, 100:200] = float("-inf")
    t[4, 300:310] = float("-inf")  # forbidden to the teacher only: finite KL
    loss, grad = _check(s, t, temperature=tau, large_logits=True)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert torch.all(grad[2:4, 100:200] == 0)


def test_gradcheck_fp64():
    s, t = _logits(5, 23, dtype=torch.float64)
    mask = torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool)
    for reduction in ("none", "sum", "mean"):
        student = s.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda x: softmax_kl(x, t, temperature=2.5, mask=mask, vocab_end=19,
                                 reduction=reduction), (student,))
    _check(s, t, temperature=3.0, vocab_end=20, dtype=torch.float64)


def test_strided_inputs():
    s, t = _logits(6, 2000)
    # rows that do not start one shard-width apart (a column slice of wider logits)
    _check(s[:, 100:1371], t[:, 50:1321], temperature=2.0, vocab_end=1200)
    # non-unit column stride
    _check(s[:, ::2], t[:, 1::2], temperature=2.0)


def test_leading_dims_and_mask_shape():
    s, t = _logits(12, 500)
    mask = torch.rand(3, 4, generator=torch.Generator().manual_seed(3)) > 0.3
    _check(s.reshape(3, 4, 500), t.reshape(3, 4, 500), mask=mask, reduction="none")
    _check(s.reshape(3, 4, 500), t.reshape(3, 4, 500), mask=mask.reshape(12), reduction="mean")


def test_many_chunks(monkeypatch, threads):
    """Chunk boundaries, a partial last chunk and a fully masked chunk give the same answer."""
    monkeypatch.setattr(softmax_kl_torch, "CHUNK_ELEMENTS", 3000)  # 2 rows of 1271 per chunk
    monkeypatch.setattr(softmax_kl_torch, "STATS_CHUNK_ELEMENTS", 3000)
    s, t = _logits(7, 1271)
    mask = torch.tensor([1, 1, 0, 0, 1, 0, 1], dtype=torch.bool)  # rows 2-3 form a dead chunk
    _check(s, t, temperature=2.0, mask=mask, vocab_end=1250)
    s, t = _logits(64, 1271, dtype=torch.bfloat16)
    _check(s, t, temperature=2.0, mask=torch.arange(64) % 5 != 0, vocab_end=1200)


def test_teacher_is_constant_and_no_grad_forward():
    s, t = _logits(3, 40)
    student = s.clone().requires_grad_(True)
    teacher = t.clone().requires_grad_(True)
    softmax_kl(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None
    with torch.no_grad():
        assert torch.allclose(softmax_kl(s, t), softmax_kl(student, teacher))


def test_empty_rows():
    s, t = _logits(0, 10)
    student = s.clone().requires_grad_(True)
    loss = softmax_kl(student, t, reduction="mean")
    loss.backward()
    assert loss == 0 and student.grad.shape == (0, 10)


@pytest.mark.parametrize("kwargs,args,error,words", [
    ({}, ((4, 10), (4, 11)), ValueError, "teacher_logits shape"),
    ({}, ((4, 10), (5, 10)), ValueError, "student_logits shape"),
    ({"temperature": 0.0}, None, ValueError, "temperature"),
    ({"temperature": -1.0}, None, ValueError, "temperature"),
    ({"temperature": float("nan")}, None, ValueError, "temperature"),
    ({"reduction": "batchmean"}, None, ValueError, "reduction"),
    ({"mask": torch.ones(5, dtype=torch.bool)}, None, ValueError, "mask shape"),
    ({"mask": torch.ones(4, 1, dtype=torch.bool)}, None, ValueError, "mask shape"),
    ({"mask": [1, 1, 1, 1]}, None, TypeError, "mask"),
    ({"vocab_end": 11}, None, ValueError, "vocab_end"),
    ({"vocab_end": -1}, None, ValueError, "vocab_end"),
    ({"vocab_end": 5.0}, None, ValueError, "vocab_end"),
])
def test_input_validation(kwargs, args, error, words):
    s_shape, t_shape = args or ((4, 10), (4, 10))
    with pytest.raises(error, match=words):
        softmax_kl(torch.zeros(s_shape), torch.zeros(t_shape), **kwargs)


@pytest.mark.parametrize("which", ["student_logits", "teacher_logits"])
def test_bad_dtype(which):
    good, bad = torch.zeros(3, 5), torch.zeros(3, 5, dtype=torch.int64)
    args = (bad, good) if which == "student_logits" else (good, bad)
    with pytest.raises(TypeError, match=f"{which} must be float16, bfloat16, float32 or float64"):
        softmax_kl(*args)
    with pytest.raises(TypeError, match=which):
        softmax_kl(*((None, good) if which == "student_logits" else (good, None)))


def _no_triton():
    raise ImportError("No module named 'triton'")


def test_cuda_without_triton_is_an_error_with_an_opt_out(monkeypatch):
    from kernels.softmax_kl import BACKEND_ENV, select_backend
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    with pytest.raises(ImportError, match=f"'triton' package.*{BACKEND_ENV}=torch"):
        select_backend("cuda", False, import_triton=_no_triton)
    assert select_backend("cpu", False, import_triton=_no_triton) == "torch"
    assert select_backend("cuda", True, import_triton=_no_triton) == "torch"  # fp64
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert select_backend("cuda", False, import_triton=_no_triton) == "torch"
    monkeypatch.setenv(BACKEND_ENV, "auto")
    with pytest.raises(ImportError, match="triton"):
        select_backend("cuda", False, import_triton=_no_triton)
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=f"{BACKEND_ENV}: 'cuda' is not one of"):
        select_backend("cpu", False)


def test_backend_env_torch_overrides_the_interpreter(monkeypatch):
    from kernels.softmax_kl import BACKEND_ENV
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert backend_name(torch.zeros(2, 3)) == "torch"


class _NoHostSync(TorchDispatchMode):
    """Fails on every op that makes the host wait for the device (on CUDA) to read a value."""
    FORBIDDEN = {"_local_scalar_dense", "nonzero", "nonzero_static", "masked_select", "is_nonzero",
                 "item"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__.split(".")[0]
        bool_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()) if i is not None)
        if name in self.FORBIDDEN or bool_index:
            raise AssertionError(f"host sync: {func}")
        return func(*args, **kwargs)


def test_torch_path_forces_no_host_sync():
    """Forward and backward of the PyTorch path, masked, under a dispatch mode that fails on any
    op reading a value back to the host. Dispatch modes are per thread, so the chunks run inline
    here (one torch thread)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s, t = _logits(6, 300)
        mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
        for reduction in ("none", "sum", "mean"):
            student = s.clone().requires_grad_(True)
            with _NoHostSync():
                loss = softmax_kl(student, t, temperature=2.0, mask=mask, vocab_end=290,
                                  reduction=reduction)
                loss.backward(torch.ones_like(loss))
        with pytest.raises(AssertionError, match="host sync"), _NoHostSync():
            bool(mask.any())  # the mode does catch what it is for
    finally:
        torch.set_num_threads(saved)

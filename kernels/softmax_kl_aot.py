"""Compile the softmax_kl Triton kernels ahead of time for NVIDIA GPUs, without a GPU.

`triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cc, 32))`
runs Triton's whole pipeline and the bundled ptxas on any machine (docs/design.md, "The fused
loss kernel"). The signature reproduces what a launch on real shards specialises: 16-byte aligned
pointers, unit column strides (Triton specialises an int equal to 1), row strides and the shard
width divisible by 16 (the vocabulary is padded to 128 * TP), and `vocab_end` with no hint: on
the last rank of every layout it is 50265 - offset, 9 mod 16.

Used by tests/kernels/test_triton_aot.py (a spread of configs, in CI), by
kernels/benchmarks/aot_softmax_kl.py (every config) and by the benchmark's JSON.
Run it with TRITON_INTERPRET unset: the interpreter replaces the compiler.
"""
from __future__ import annotations

import os
import re
import subprocess
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import softmax_kl_triton as kt

TARGETS = {"sm_80": 80, "sm_90": 90}  # A100, H100 / H200
DTYPES = ("fp32", "bf16", "fp16")
KERNELS = ("row_stats", "grad")
_ALIGNED = 16


def _spec(kernel: str, dtype: str, has_keep: bool):
    """(fn, signature, constexprs, indices of the arguments a launch marks divisible by 16)."""
    if kernel == "row_stats":
        fn = kt._row_stats_kernel
        types = {"S": f"*{dtype}", "T": f"*{dtype}", "KEEP": "*i1" if has_keep else "*fp32",
                 "STATS": "*fp32", "n_rows": "i32", "s_stride_r": "i32", "t_stride_r": "i32",
                 "width": "i32", "vocab_end": "i32", "inv_tau": "fp32"}
        constexprs = {"s_stride_c": 1, "t_stride_c": 1, "HAS_KEEP": has_keep}
        aligned = ("S", "T", "KEEP", "STATS", "s_stride_r", "t_stride_r", "width")
    elif kernel == "grad":
        fn = kt._grad_kernel
        types = {"S": f"*{dtype}", "T": f"*{dtype}", "G": f"*{dtype}", "LSE_S": "*fp32",
                 "LSE_T": "*fp32", "COEF": "*fp32", "s_stride_r": "i32", "t_stride_r": "i32",
                 "g_stride_r": "i32", "n_cols": "i32", "vocab_end": "i32", "scale2": "fp32"}
        constexprs = {"s_stride_c": 1, "t_stride_c": 1}
        aligned = ("S", "T", "G", "LSE_S", "LSE_T", "COEF", "s_stride_r", "t_stride_r",
                   "g_stride_r", "n_cols")
    else:
        raise ValueError(f"unknown kernel {kernel!r}")
    names = fn.arg_names
    signature = {name: types.get(name, "constexpr") for name in names}
    return fn, signature, constexprs, [names.index(name) for name in aligned]


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")


def resource_usage(cubin: bytes, tmp_dir: str) -> dict:
    """REG (registers per thread), LOCAL and STACK (bytes per thread; spills live in local
    memory) of a cubin, read with the cuobjdump that ships with triton."""
    path = os.path.join(tmp_dir, f"kernel_{os.getpid()}_{time.monotonic_ns()}.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    try:
        out = subprocess.run([_cuobjdump(), "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.remove(path)
    usage = {key.lower(): int(value) for key, value in re.findall(r"\b(REG|LOCAL|STACK):(\d+)", out)}
    if "reg" not in usage:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{out}")
    return usage


def global_loads(ptx: str) -> dict:
    """Count of each `ld.global` form in the PTX (e.g. 'ld.global.v4.b32': 4)."""
    counts: dict = {}
    for form in re.findall(r"\bld\.global(?:\.[a-z0-9]+)+", ptx):
        counts[form] = counts.get(form, 0) + 1
    return counts


def compile_kernel(kernel: str, dtype: str, config: triton.Config, arch: str,
                   has_keep: bool = False, tmp_dir: str = "/tmp", unhinted=()) -> dict:
    """Compile one kernel for one target; returns registers, local memory, load forms, PTX.
    `unhinted`: argument names to leave without the divisibility hint (a control: the shard
    width as unaligned as vocab_end is the first version's load mask)."""
    fn, signature, constexprs, aligned = _spec(kernel, dtype, has_keep)
    aligned = [i for i in aligned if fn.arg_names[i] not in unhinted]
    constexprs = dict(constexprs, BLOCK_V=config.kwargs["BLOCK_V"])
    attrs = {(i,): [["tt.divisibility", _ALIGNED]] for i in aligned}
    t0 = time.perf_counter()
    capability = TARGETS[arch] if arch in TARGETS else int(arch.removeprefix("sm_"))
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs),
                              target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": config.num_warps})
    seconds = time.perf_counter() - t0
    usage = resource_usage(compiled.asm["cubin"], tmp_dir)
    ptx = compiled.asm["ptx"]
    return dict(kernel=kernel, dtype=dtype, has_keep=has_keep, arch=arch,
                block_v=config.kwargs["BLOCK_V"], num_warps=config.num_warps,
                n_regs=usage["reg"], local_bytes=usage.get("local", 0),
                stack_bytes=usage.get("stack", 0), loads=global_loads(ptx),
                compile_s=round(seconds, 2), ptx=ptx)


def grid(kernels=KERNELS, dtypes=DTYPES, archs=tuple(TARGETS), configs=None):
    """Every (kernel, dtype, mask, config, arch) case; the mask only exists in row_stats (the
    gradient kernel reads a per-row coefficient at run time)."""
    for kernel in kernels:
        for dtype in dtypes:
            for has_keep in ((False, True) if kernel == "row_stats" else (False,)):
                for config in configs or kt.CONFIGS:
                    for arch in archs:
                        yield kernel, dtype, has_keep, config, arch

"""Benchmark softmax_kl against the naive formula, torch.compile of it, and Liger-Kernel's KL loss.

    python -m kernels.benchmarks.bench_softmax_kl                  # CPU-sized set on the CPU
    python -m kernels.benchmarks.bench_softmax_kl --device cuda    # the GPU set, bf16

Per shape and variant: median time of forward + backward (loss.backward() filling the student's
gradient), peak extra memory of that step, achieved bandwidth on the 5·N·V_r·bytes-per-value
traffic model (= 10·N·V_r bytes for bf16: read both inputs twice, write the gradient once) and,
on a GPU, that bandwidth as a fraction of the device's HBM peak. Writes
`<out-dir>/softmax_kl_<device>.json` and `.png` and prints a table.

Timing: variants run interleaved (rep 1 of every variant, then rep 2, ...) in one process, so
machine load hits all of them alike; medians over --reps after --warmup untimed steps.
Peak extra memory: on CUDA, max_memory_allocated() during one step minus memory_allocated()
before it. On the CPU (the torch allocator keeps no statistics there and tracemalloc does not see
it) each (shape, variant) runs in a fresh subprocess: inputs allocated, one warm-up step, freed
memory handed back to the OS (malloc_trim), VmRSS read, the peak-RSS mark reset
(/proc/self/clear_refs), one step, then VmHWM - VmRSS_before. Both count the gradient buffer.

Shapes include Llama-3's vocabulary (128,256 columns) and the last rank's shard at TP 2/4/8 (the
vocabulary padded to 128·TP: `N x V_r:real` in the table, the other variants get the real
columns). The JSON's meta also records, per autotune config of both Triton kernels, registers
and local (spill) bytes per thread compiled ahead of time for sm_80 and sm_90 (on a GPU: its own
target, plus the autotuner's choices).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from kernels import softmax_kl
from kernels.softmax_kl import backend_name

from kernels.benchmarks.peak_memory import cpu_peak_extra_bytes, cuda_peak_extra_bytes, probe_in_child

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Llama-3's vocabulary (128,256 ids) unsharded and its last rank's shard at TP 2/4/8, the
# vocabulary padded to 128 * TP as Megatron does: (width, real columns of the last shard)
LLAMA3_VOCAB = 128256
LLAMA3_SHARDS = {tp: (-(-LLAMA3_VOCAB // (128 * tp)) * 128,
                      LLAMA3_VOCAB - (tp - 1) * (-(-LLAMA3_VOCAB // (128 * tp)) * 128))
                 for tp in (1, 2, 4, 8)}  # {1: (128256, 128256), 2: (64128, 64128), ...}
# shapes are (N, V_r) or (N, V_r, vocab_end)
CPU_SHAPES = ([(1024, 6288), (2048, 12576), (4096, 18944), (4096, 50304)]
              + [(256, w, e) for w, e in LLAMA3_SHARDS.values()])
GPU_SHAPES = ([(n, v) for n in (4096, 8192, 16384) for v in (6288, 12576, 50304, 18944)]
              + [(8192, w, e) for w, e in LLAMA3_SHARDS.values()])
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# HBM peak (bytes/s) by device-name fragment; --peak-gbps overrides
GPU_PEAK = [("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
            ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12)]


# ----------------------------------------------------------------------------- variants

def naive_kl(s, t, tau):
    """The formula as one would write it: fp32 log-softmax of both, then KL, summed."""
    log_p_s = torch.log_softmax(s.float() / tau, dim=-1)
    log_p_t = torch.log_softmax(t.float() / tau, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum() * tau * tau


def make_variant(name, tau, vocab_end=None):
    """name -> fn(student, teacher) -> scalar loss, or raise ImportError if unavailable.

    vocab_end < V_r: a padded shard; this kernel skips the padding columns, the other variants
    get the real columns as a slice (what a per-rank eager formula would do)."""
    if name == "glmd":
        return lambda s, t: softmax_kl(s, t, temperature=tau, reduction="sum",
                                       vocab_end=vocab_end)
    cut = (lambda x: x) if vocab_end is None else (lambda x: x[:, :vocab_end])
    if name == "naive":
        return lambda s, t: naive_kl(cut(s), cut(t), tau)
    if name == "compiled":
        compiled = torch.compile(naive_kl)  # one wrapper: automatic dynamic shapes after a recompile
        return lambda s, t: compiled(cut(s), cut(t), tau)
    if name == "liger":
        from liger_kernel.transformers import LigerKLDIVLoss  # noqa: PLC0415 - optional
        loss_fn = LigerKLDIVLoss(reduction="sum", log_target=True)

        def liger(s, t):  # its log-softmax included, in the input dtype (its cheapest use)
            s, t = cut(s), cut(t)
            with torch.no_grad():
                log_p_t = torch.log_softmax(t / tau, dim=-1)
            return loss_fn(torch.log_softmax(s / tau, dim=-1), log_p_t) * tau * tau
        return liger
    raise ValueError(f"unknown variant {name!r}")


def inputs(n, v, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    s = (torch.randn(n, v, generator=g) * 4).to(device=device, dtype=dtype).requires_grad_(True)
    t = (torch.randn(n, v, generator=g) * 4 + 1).to(device=device, dtype=dtype)
    return s, t


def step(fn, s, t):
    s.grad = None
    loss = fn(s, t)
    loss.backward()
    return loss.detach()


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- memory

def _probe_cpu_memory(variant, n, v, dtype_name, tau, vocab_end=None):
    """Child process: peak extra RSS (bytes) of one step; see the module docstring."""
    fn = make_variant(variant, tau, vocab_end)
    s, t = inputs(n, v, DTYPES[dtype_name], "cpu")
    step(fn, s, t)  # warm-up: code paths, thread pools, torch.compile
    s.grad = None
    return cpu_peak_extra_bytes(lambda: step(fn, s, t))


def cpu_peak_memory(variant, n, v, dtype_name, tau, vocab_end=None):
    cmd = [sys.executable, "-m", "kernels.benchmarks.bench_softmax_kl", "--_probe",
           variant, str(n), str(v), dtype_name, str(tau)] + ([str(vocab_end)] if vocab_end else [])
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return probe_in_child(cmd, cwd=root, env=env)


def cuda_peak_memory(fn, s, t):
    s.grad = None
    return cuda_peak_extra_bytes(lambda: step(fn, s, t))


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_copy_bandwidth():
    """Bytes/s of a large fp32 copy (read + write): what this CPU's memory does in practice."""
    x = torch.randn(64 << 20)
    y = torch.empty_like(x)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        y.copy_(x)
        times.append(time.perf_counter() - t0)
    return 2 * x.numel() * 4 / statistics.median(times)


# ----------------------------------------------------------------------------- Triton resources

def kernel_resources(dtype_name, archs):
    """Registers and local (spill) bytes per thread of every autotune config of both kernels,
    compiled ahead of time for `archs` (kernels/softmax_kl_aot.py), as launched here: no mask."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return [dict(error="TRITON_INTERPRET=1: the interpreter replaces the compiler")]
    try:
        import tempfile

        from kernels import softmax_kl_aot, softmax_kl_triton
    except ImportError as e:
        return [dict(error=f"ImportError: {e}")]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in softmax_kl_aot.KERNELS:
            for config in softmax_kl_triton.CONFIGS:
                for arch in archs:
                    row = dict(kernel=kernel, arch=arch, block_v=config.kwargs["BLOCK_V"],
                               num_warps=config.num_warps, dtype=dtype_name)
                    try:
                        case = softmax_kl_aot.compile_kernel(kernel, dtype_name, config, arch,
                                                             tmp_dir=tmp)
                        row.update((k, case[k]) for k in ("n_regs", "local_bytes", "stack_bytes"))
                        row["vector_loads"] = case["loads"].get("ld.global.v4.b32", 0)
                    except Exception as e:  # noqa: BLE001 - recorded, not fatal
                        row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    out.append(row)
    return out


def autotune_choices():
    """On CUDA after the run: the config the autotuner picked per key, for both kernels."""
    try:
        from kernels import softmax_kl_triton
    except ImportError:
        return None
    out = {}
    for name, tuned in (("row_stats", softmax_kl_triton._row_stats_tuned),
                        ("grad", softmax_kl_triton._grad_tuned)):
        cache = getattr(tuned, "cache", None) or {}
        out[name] = [dict(key=[str(k) for k in key], block_v=cfg.kwargs.get("BLOCK_V"),
                          num_warps=cfg.num_warps) for key, cfg in cache.items()]
    return out


# ----------------------------------------------------------------------------- the run

def bench_shape(n, v, vocab_end, dtype_name, device, variants, tau, warmup, reps):
    s, t = inputs(n, v, DTYPES[dtype_name], device)
    fns, rows = {}, {}
    ve = None if vocab_end == v else vocab_end
    for name in variants:
        row = rows[name] = dict(variant=name, n=n, v=v, vocab_end=vocab_end, dtype=dtype_name)
        try:
            fns[name] = make_variant(name, tau, ve)
            for _ in range(warmup):
                row["loss"] = float(step(fns[name], s, t))
            sync(device)
        except Exception as e:  # noqa: BLE001 - an unavailable variant is reported, not fatal
            fns.pop(name, None)
            row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    times = {name: [] for name in fns}
    for r in range(reps):
        order = list(fns)[r % max(len(fns), 1):] + list(fns)[:r % max(len(fns), 1)]
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            step(fns[name], s, t)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        rows[name].update(median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts), reps=reps)
        try:
            rows[name]["peak_extra_bytes"] = (
                cuda_peak_memory(fns[name], s, t) if device == "cuda"
                else cpu_peak_memory(name, n, v, dtype_name, tau, ve))
        except Exception as e:  # noqa: BLE001
            rows[name]["peak_extra_bytes"] = None
            rows[name]["memory_error"] = str(e)[:300]
    del s, t, fns
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return [rows[name] for name in variants]


def add_derived(rows, elem_bytes, peak_bps):
    by_shape = {}
    for row in rows:
        by_shape.setdefault((row["n"], row["v"], row["vocab_end"]), {})[row["variant"]] = row
    for (n, v, _), group in by_shape.items():
        model_bytes = 5 * n * v * elem_bytes
        ours = group.get("glmd", {})
        for row in group.values():
            if "median_s" not in row:
                continue
            row["model_bytes"] = model_bytes
            row["gbps"] = model_bytes / row["median_s"] / 1e9
            if peak_bps:
                row["fraction_of_peak"] = model_bytes / row["median_s"] / peak_bps
            if "median_s" in ours:
                row["time_vs_glmd"] = row["median_s"] / ours["median_s"]
            if ours.get("peak_extra_bytes") and row.get("peak_extra_bytes") is not None:
                row["memory_vs_glmd"] = row["peak_extra_bytes"] / ours["peak_extra_bytes"]
            if "loss" in ours and "loss" in row:
                row["loss_rel_diff_vs_glmd"] = abs(row["loss"] - ours["loss"]) / max(
                    abs(ours["loss"]), 1e-30)


def print_table(rows, peak_bps):
    head = (f"{'N':>6} {'V_r':>6} {'real':>6} {'variant':>9} {'median ms':>10} {'x glmd':>7} "
            f"{'peak MiB':>9} {'x glmd':>7} {'GB/s':>7}" + (f" {'% peak':>7}" if peak_bps else ""))
    print(head)
    print("-" * len(head))
    for r in rows:
        if "median_s" not in r:
            print(f"{r['n']:>6} {r['v']:>6} {r['vocab_end']:>6} {r['variant']:>9}  n/a: "
                  f"{r.get('error', '')[:70]}")
            continue
        mem = r.get("peak_extra_bytes")
        line = (f"{r['n']:>6} {r['v']:>6} {r['vocab_end']:>6} {r['variant']:>9} "
                f"{r['median_s'] * 1e3:>10.2f} "
                f"{r.get('time_vs_glmd', float('nan')):>7.2f} "
                f"{(mem / 2**20 if mem is not None else float('nan')):>9.1f} "
                f"{r.get('memory_vs_glmd', float('nan')):>7.2f} {r['gbps']:>7.1f}")
        if peak_bps:
            line += f" {100 * r['fraction_of_peak']:>6.1f}%"
        print(line)


def plot(rows, variants, path, title, peak_bps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({(r["n"], r["v"], r["vocab_end"]) for r in rows})
    variants = [name for name in variants  # leave out variants that never ran (no Liger)
                if any("median_s" in r for r in rows if r["variant"] == name)]
    labels = [f"{n}x{v}" + (f":{e}" if e != v else "") for n, v, e in shapes]
    panels = [("median_s", 1e3, "fwd+bwd median (ms)", True),
              ("peak_extra_bytes", 2.0 ** -20, "peak extra memory (MiB)", True),
              ("gbps", 1.0, "GB/s on the 5·N·V_r·bytes model", False)]
    fig, axes = plt.subplots(1, 3, figsize=(max(12, 1.6 * len(shapes) * 3), 4.5))
    width = 0.8 / max(len(variants), 1)
    for ax, (key, factor, ylabel, log) in zip(axes, panels):
        for i, name in enumerate(variants):
            vals = []
            for n, v, e in shapes:
                row = next((r for r in rows
                            if (r["n"], r["v"], r["vocab_end"], r["variant"]) == (n, v, e, name)), {})
                val = row.get(key)
                vals.append(val * factor if val is not None else 0.0)
            ax.bar([x + i * width for x in range(len(shapes))], vals, width, label=name)
        if key == "gbps" and peak_bps:
            ax.axhline(peak_bps / 1e9, color="k", ls="--", lw=1, label="HBM peak")
            ax.axhline(0.8 * peak_bps / 1e9, color="gray", ls=":", lw=1, label="80% of peak")
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(shapes))])
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_shapes(text):
    """"4096x50304,256x32128:31872" -> [(4096, 50304), (256, 32128, 31872)] (N x V_r[:real])."""
    out = []
    for item in (x for x in text.split(",") if x):
        n, rest = item.lower().split("x")
        out.append((int(n),) + tuple(int(x) for x in rest.split(":")))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_probe":  # internal: one CPU memory measurement
        variant, n, v, dtype_name, tau = argv[1:6]
        vocab_end = int(argv[6]) if len(argv) > 6 else None
        print(_probe_cpu_memory(variant, int(n), int(v), dtype_name, float(tau), vocab_end))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--shapes", type=parse_shapes,
                   help="e.g. 4096x50304,256x32128:31872 (N x V_r, optionally :real columns)")
    p.add_argument("--variants", default="glmd,naive,compiled,liger")
    p.add_argument("--tau", type=float, default=15.0, help="temperature (GLMD uses 15)")
    p.add_argument("--warmup", type=int, help="default 2 on cpu, 5 on cuda")
    p.add_argument("--reps", type=int, help="default 7 on cpu, 20 on cuda")
    p.add_argument("--peak-gbps", type=float, help="GPU memory peak in GB/s (default: by name)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", default="", help="suffix of the output file names")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device")
    dtype_name = args.dtype or ("bf16" if device == "cuda" else "fp32")
    shapes = args.shapes or (GPU_SHAPES if device == "cuda" else CPU_SHAPES)
    variants = [x for x in args.variants.split(",") if x]
    warmup = args.warmup if args.warmup is not None else (5 if device == "cuda" else 2)
    reps = args.reps if args.reps is not None else (20 if device == "cuda" else 7)

    meta = dict(
        command=" ".join(["python -m kernels.benchmarks.bench_softmax_kl"] + list(argv)),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device, dtype=dtype_name, tau=args.tau, warmup=warmup, reps=reps,
        torch=torch.__version__, python=platform.python_version(),
        traffic_model="5 * N * V_r * bytes_per_value (10 * N * V_r for bf16)",
        timing="median of interleaved forward+backward steps (loss.backward() included)",
        memory_method=("cuda: max_memory_allocated during one step minus memory_allocated "
                       "before it" if device == "cuda" else
                       "cpu: fresh subprocess per (shape, variant); after one warm-up step and "
                       "malloc_trim, VmHWM reset via /proc/self/clear_refs; peak = VmHWM after "
                       "one step - VmRSS before it"),
    )
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    peak_bps = None
    if device == "cuda":
        name = torch.cuda.get_device_name()
        meta["device_name"] = name
        peak_bps = (args.peak_gbps * 1e9 if args.peak_gbps
                    else next((bw for key, bw in GPU_PEAK if key in name), None))
        meta["peak_bytes_per_s"] = peak_bps
    else:
        meta["device_name"] = _cpu_name()
        meta["cpu_threads"] = torch.get_num_threads()
        meta["load_average_before"] = os.getloadavg()
        meta["cpu_copy_bytes_per_s"] = cpu_copy_bandwidth()
    meta["glmd_backend"] = backend_name(torch.empty(1, 1, device=device, dtype=DTYPES[dtype_name]))

    rows = []
    for shape in shapes:
        n, v, vocab_end = shape if len(shape) == 3 else (*shape, shape[1])
        print(f"... {n}x{v}:{vocab_end} {dtype_name}", file=sys.stderr, flush=True)
        rows += bench_shape(n, v, vocab_end, dtype_name, device, variants, args.tau, warmup,
                            reps)
    if device == "cpu":
        meta["load_average_after"] = os.getloadavg()  # other processes share these cores
    else:
        meta["autotune_choices"] = autotune_choices()
    archs = (["sm_80", "sm_90"] if device == "cpu" else
             ["sm_%d%d" % torch.cuda.get_device_capability()])
    meta["kernel_resources"] = kernel_resources(dtype_name, archs)
    add_derived(rows, DTYPES[dtype_name].itemsize, peak_bps)
    print_table(rows, peak_bps)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"softmax_kl_{device}{('_' + args.tag) if args.tag else ''}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(dict(meta=meta, results=rows), indent=1))
    plot(rows, variants, args.out_dir / f"{stem}.png",
         f"softmax_kl fwd+bwd, {dtype_name}, tau={args.tau}, {meta['device_name']}", peak_bps)
    print(f"wrote {args.out_dir / stem}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

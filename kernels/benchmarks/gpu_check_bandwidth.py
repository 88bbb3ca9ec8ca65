"""Part 3 of `gpu_check.sh`: kernel-only bandwidth of softmax_kl as a fraction of HBM peak.

    python -m kernels.benchmarks.gpu_check_bandwidth --out OUT_DIR/bandwidth.json [--peak-tbps X]

Each shape runs the public `softmax_kl` once (forward and backward, autotuning included) while
the arguments of its two Triton launchers are recorded; `triton.testing.do_bench` (median, L2
flushed between runs) then times each launcher alone with those arguments. Bytes are the
kernels' minimum traffic (`kernel_bytes`): `row_stats` reads the real columns of both inputs once,
`grad` reads them again and writes the whole gradient (padding columns included) once: for bf16,
2·2·N·vocab_end + 2·2·N·vocab_end + 2·N·V bytes. The per-row statistics and log-sum-exps (O(N))
are left out. Shapes: the 40-GPU run's shard (micro-batch 1 x sequence 512 rows, TP=2's 25216
columns) and a bandwidth-bound 8192 x 50304, each with `vocab_end` a multiple of 16 and one
≡ 9 (mod 16), the last TP rank's. The HBM peak is looked up from the device name
(`gpu_check_common.HBM_PEAK`) unless `--peak-tbps` is given; the JSON says what was assumed.
"""
from __future__ import annotations

import contextlib
import sys

import torch

SHAPES = [(512, 25216, 25216), (512, 25216, 25049), (8192, 50304, 50304), (8192, 50304, 50265)]


def kernel_bytes(n: int, v: int, vocab_end: int, elem_bytes: int, kept_rows: int | None = None) -> dict:
    """Minimum HBM traffic of each kernel for an `[n, v]` shard (masked rows are read by neither)."""
    kept = n if kept_rows is None else kept_rows
    read_both = 2 * kept * vocab_end * elem_bytes
    return {"row_stats": read_both, "grad": read_both + n * v * elem_bytes}


@contextlib.contextmanager
def recorded_launches(module):
    """Record the (function, args, kwargs) of the first call of `row_stats` and of `grad`."""
    calls, saved = {}, {name: getattr(module, name) for name in ("row_stats", "grad")}

    def recording(name, fn):
        def call(*args, **kwargs):
            calls.setdefault(name, (fn, args, kwargs))
            return fn(*args, **kwargs)
        return call

    for name, fn in saved.items():
        setattr(module, name, recording(name, fn))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def measure(n, v, vocab_end, peak, dtype=torch.bfloat16) -> dict:
    import triton.testing

    from kernels import softmax_kl_triton
    from kernels.benchmarks.gpu_check_kernel import make_inputs, run_softmax_kl
    s, t, _ = make_inputs(n, v, vocab_end, dtype=dtype, masked=0.0)
    with recorded_launches(softmax_kl_triton) as calls:
        run_softmax_kl(s, t, None, vocab_end, 15.0)
    if set(calls) != {"row_stats", "grad"}:
        raise RuntimeError(f"softmax_kl launched {sorted(calls)} of the Triton path, not row_stats and grad")
    traffic = kernel_bytes(n, v, vocab_end, s.element_size())
    row = {"n": n, "v": v, "vocab_end": vocab_end, "vocab_end_mod_16": vocab_end % 16, "dtype": str(dtype)}
    for name in ("row_stats", "grad"):
        fn, args, kwargs = calls[name]
        ms = triton.testing.do_bench(lambda: fn(*args, **kwargs), return_mode="median")
        row[name] = {"ms": ms, "bytes": traffic[name], "gbps": traffic[name] / ms / 1e6}
    total_ms = row["row_stats"]["ms"] + row["grad"]["ms"]
    row["total"] = {"ms": total_ms, "bytes": sum(traffic.values()), "gbps": sum(traffic.values()) / total_ms / 1e6}
    for part in ("row_stats", "grad", "total"):
        row[part]["fraction_of_peak"] = row[part]["gbps"] * 1e9 / peak if peak else None
    return row


def run(args) -> dict:
    from kernels.benchmarks.gpu_check_common import hbm_peak
    name = torch.cuda.get_device_name()
    peak, assumed = hbm_peak(name)
    if args.peak_tbps:
        peak, assumed = args.peak_tbps * 1e12, f"HBM peak {args.peak_tbps} TB/s from --peak-tbps"
    print(assumed, flush=True)
    rows, failures = [], []
    for n, v, vocab_end in SHAPES:
        try:
            rows.append(measure(n, v, vocab_end, peak))
            r = rows[-1]
            frac = "" if peak is None else f" = {100 * r['total']['fraction_of_peak']:.1f}% of peak"
            print(f"{n} x {v} vocab_end {vocab_end}: row_stats {r['row_stats']['ms']:.3f} ms, grad "
                  f"{r['grad']['ms']:.3f} ms, {r['total']['gbps']:.0f} GB/s{frac}", flush=True)
        except Exception as e:  # noqa: BLE001 - the other shapes still run
            failures.append(f"{n} x {v} vocab_end {vocab_end}: {type(e).__name__}: {e}")
            print(failures[-1], flush=True)
    headline = {f"{r['n']}x{r['v']}/{r['vocab_end']}": (round(r["total"]["fraction_of_peak"], 3)
                                                        if peak else round(r["total"]["gbps"], 1)) for r in rows}
    return {"status": "failed" if failures else "ok", "device": name, "hbm_peak_bytes_per_s": peak,
            "hbm_peak_assumed": assumed, "shapes": rows, "failures": failures,
            "headline": {"unit": "fraction of HBM peak" if peak else "GB/s", **headline}}


if __name__ == "__main__":
    from kernels.benchmarks.gpu_check_common import part_main
    sys.exit(part_main("bandwidth", run, configure=lambda p: p.add_argument(
        "--peak-tbps", type=float, help="HBM peak in TB/s (default: looked up from the device name)")))

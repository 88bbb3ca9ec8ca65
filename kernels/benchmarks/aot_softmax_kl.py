"""Compile softmax_kl's Triton kernels for A100 (sm_80) and H100/H200 (sm_90) without a GPU.

    python -m kernels.benchmarks.aot_softmax_kl              # every kernel x dtype x mask x config x target
    python -m kernels.benchmarks.aot_softmax_kl --spread     # each case once, the configs spread (CI)

Writes `<out-dir>/softmax_kl_aot.json` (or `--json PATH`): per case the registers per thread,
local and stack bytes (spills live in local memory; both must be 0), the PTX's `ld.global` forms
(the inputs' loads must be 128-bit `ld.global.v4` on the padded last rank, whose `vocab_end` has
no divisibility), and the compile time. Exits 1 if a case fails to compile, spills, or loads its
inputs with scalar loads beyond the row's two reference-column loads. A control case compiles
the first version's load mask (a bound with no divisibility, as `offs < vocab_end` was) and
records its scalar loads. TRITON_INTERPRET must be unset (the interpreter replaces the compiler).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# scalar loads of the inputs' dtype a kernel may have: row_stats reads s_k and t_k at the
# reference column once per row; the gradient kernel none
SCALAR_INPUT_LOADS = {"row_stats": 2, "grad": 0}
_WIDTH = {"fp32": "b32", "bf16": "b16", "fp16": "b16"}


def problems(case: dict) -> list:
    """What is wrong with one compiled case (empty: nothing)."""
    out = []
    if case["local_bytes"] or case["stack_bytes"]:
        out.append(f"spills: {case['local_bytes']} local / {case['stack_bytes']} stack bytes")
    loads = case["loads"]
    if not any(form.startswith("ld.global.v4") for form in loads):
        out.append(f"no 128-bit vector loads: {loads}")
    scalar = loads.get(f"ld.global.{_WIDTH[case['dtype']]}", 0)
    if case["dtype"] == "fp32":  # the per-row scalars (keep, coef, lse) are b32 loads too
        scalar -= 3 if case["kernel"] == "grad" else 0
    if scalar > SCALAR_INPUT_LOADS[case["kernel"]]:
        out.append(f"{scalar} scalar input loads: {loads}")
    return out


def run(spread: bool, archs, dtypes, kernels) -> list:
    from kernels import softmax_kl_aot, softmax_kl_triton

    cases = list(softmax_kl_aot.grid(kernels, dtypes, archs, configs=[None]) if spread
                 else softmax_kl_aot.grid(kernels, dtypes, archs))
    results = []
    index = {kernel: 0 for kernel in kernels}
    with tempfile.TemporaryDirectory() as tmp:
        for kernel, dtype, has_keep, config, arch in cases:
            if config is None:  # spread: the next config of this kernel's round robin
                config = softmax_kl_triton.CONFIGS[index[kernel] % len(softmax_kl_triton.CONFIGS)]
                index[kernel] += 1
            label = (f"{kernel} {dtype} mask={'on' if has_keep else 'off'} {arch} "
                     f"BLOCK_V={config.kwargs['BLOCK_V']} warps={config.num_warps}")
            try:
                case = softmax_kl_aot.compile_kernel(kernel, dtype, config, arch, has_keep, tmp)
                case.pop("ptx")
                case["problems"] = problems(case)
            except Exception:  # noqa: BLE001 - report every case, keep going
                case = dict(kernel=kernel, dtype=dtype, has_keep=has_keep, arch=arch,
                            block_v=config.kwargs["BLOCK_V"], num_warps=config.num_warps,
                            problems=["compile failed: " + traceback.format_exc()[-2000:]])
            results.append(case)
            status = "ok" if not case["problems"] else "FAIL " + "; ".join(case["problems"])
            print(f"{label}: regs {case.get('n_regs')} local {case.get('local_bytes')} "
                  f"{case.get('compile_s')} s  {status}", flush=True)
    return results


def control(tmp_dir: str = "/tmp") -> dict:
    """The first version's load mask (`offs < vocab_end`, no divisibility) reproduced on the
    gradient kernel by leaving the width unhinted: bf16, sm_90; its loads are scalar."""
    from kernels import softmax_kl_aot, softmax_kl_triton
    case = softmax_kl_aot.compile_kernel("grad", "bf16", softmax_kl_triton.CONFIGS[2], "sm_90",
                                         tmp_dir=tmp_dir, unhinted=("n_cols",))
    case.pop("ptx")
    case["problems"] = problems(case)
    return case


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spread", action="store_true",
                   help="each kernel x dtype x mask x target once, configs in round robin")
    p.add_argument("--archs", default="sm_80,sm_90")
    p.add_argument("--dtypes", default="fp32,bf16,fp16")
    p.add_argument("--kernels", default="row_stats,grad")
    p.add_argument("--json", type=Path, help=f"default {RESULTS_DIR}/softmax_kl_aot.json")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("error: TRITON_INTERPRET: must be unset to compile (the interpreter replaces "
              "the compiler)", file=sys.stderr)
        return 2
    archs, dtypes, kernels = (tuple(x for x in v.split(",") if x)
                              for v in (args.archs, args.dtypes, args.kernels))
    from kernels import softmax_kl_aot
    for name, given, known in (("--archs", archs, softmax_kl_aot.TARGETS),
                               ("--dtypes", dtypes, softmax_kl_aot.DTYPES),
                               ("--kernels", kernels, softmax_kl_aot.KERNELS)):
        bad = [x for x in given if x not in known]
        if bad or not given:
            print(f"error: {name}: {bad or 'empty'} not in {list(known)}", file=sys.stderr)
            return 2
    import triton
    results = run(args.spread, archs, dtypes, kernels)
    unaligned = control()
    print(f"control (load mask bound not divisible by 16): loads {unaligned['loads']}")
    out = args.json or RESULTS_DIR / "softmax_kl_aot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(command=" ".join(["python -m kernels.benchmarks.aot_softmax_kl"] + list(argv or sys.argv[1:])),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                triton=triton.__version__, spread=args.spread,
                specialisation="16-byte aligned pointers, unit column strides, row strides and "
                               "shard width divisible by 16, vocab_end without a hint "
                               "(the padded last rank)")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(dict(meta=meta, cases=results, control_unaligned_mask=unaligned),
                              indent=1))
    os.replace(tmp, out)
    failed = [c for c in results if c["problems"]]
    print(f"{len(results) - len(failed)}/{len(results)} cases ok; wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The token map of tools/slice_embeddings.py: chunked argmax against a naive full-matrix argmax.

    python tools/benchmarks/bench_slice_embeddings.py [--vocab 50304 --kept 25216 --hidden 256]
        [--chunk-mib 64 256] [--repeats 3] [--device cpu|cuda]

Synthetic teacher: N(0, 1) fp32 word embedding ``[vocab, hidden]``; the kept set is the first
``kept`` ids, ids 0..9 special (never targets), so ``vocab − kept`` rows are mapped (inner
product). Variants: ``chunked-<MiB>`` is ``compress.token_map.map_tokens`` with that score
buffer; ``naive`` forms the whole ``(vocab − kept) × candidates`` score matrix and takes its
argmax. Both maps are compared. Reported per variant: median seconds over --repeats
(variants interleaved, after one untimed warm-up each), mapped rows per second, and peak extra
memory of one run, measured as kernels/benchmarks/peak_memory.py does for the kernel's benchmark.
On the CPU the peak is measured in a fresh subprocess per variant (inputs built, one warm-up run,
malloc_trim, VmRSS read, the VmHWM mark reset through /proc/self/clear_refs, one run, then
VmHWM − VmRSS before); on CUDA it is max_memory_allocated() during one run minus
memory_allocated() before it (the embedding stays on the host, as in the tool). Writes results/slice_embeddings_<device>.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from _common import median, save

from kernels.benchmarks.peak_memory import cpu_peak_extra_bytes, cuda_peak_extra_bytes, probe_in_child
from megatron_glmd.compress.token_map import chunk_rows_for, map_candidates, map_tokens

SPECIALS = list(range(10))


def inputs(vocab: int, kept: int, hidden: int, seed: int = 0):
    embedding = torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(seed))
    return embedding, torch.arange(kept)


def naive_map(embedding, kept_ids, device):
    """The whole score matrix at once, then its argmax (what the chunked map avoids)."""
    vocab = embedding.shape[0]
    candidates = map_candidates(vocab, kept_ids, SPECIALS)
    dropped = torch.ones(vocab, dtype=torch.bool)
    dropped[kept_ids] = False
    dropped = dropped.nonzero().flatten()
    scores = embedding[dropped].to(device) @ embedding[candidates].to(device).t()
    token_map = torch.arange(vocab)
    token_map[dropped] = candidates[scores.argmax(dim=1).cpu()]
    return token_map


def run_variant(name, embedding, kept_ids, device):
    if name == "naive":
        return naive_map(embedding, kept_ids, device)
    mib = int(name.split("-")[1])
    return map_tokens(embedding, kept_ids, special_ids=SPECIALS, max_chunk_bytes=mib << 20, device=device,
                      progress=False)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def probe_cpu_peak(name, vocab, kept, hidden):
    """Child process: peak extra RSS (bytes) of one run (see the module docstring)."""
    embedding, kept_ids = inputs(vocab, kept, hidden)
    run_variant(name, embedding, kept_ids, "cpu")
    return cpu_peak_extra_bytes(lambda: run_variant(name, embedding, kept_ids, "cpu"))


def cpu_peak(name, args):
    return probe_in_child([sys.executable, os.path.abspath(__file__), "--_probe", name, "--vocab", str(args.vocab),
                           "--kept", str(args.kept), "--hidden", str(args.hidden)])


def cuda_peak(name, embedding, kept_ids, device):
    return cuda_peak_extra_bytes(lambda: run_variant(name, embedding, kept_ids, device))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--kept", type=int, default=25216)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--chunk-mib", type=int, nargs="+", default=[64, 256])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-naive", action="store_true", help="skip the naive variant (too large for the device)")
    p.add_argument("--output", default="")
    p.add_argument("--_probe", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._probe:
        print(probe_cpu_peak(args._probe, args.vocab, args.kept, args.hidden))
        return
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    variants = [f"chunked-{m}" for m in args.chunk_mib] + ([] if args.no_naive else ["naive"])
    embedding, kept_ids = inputs(args.vocab, args.kept, args.hidden)
    candidates = map_candidates(args.vocab, kept_ids, SPECIALS).numel()
    mapped = args.vocab - args.kept
    maps = {name: run_variant(name, embedding, kept_ids, device) for name in variants}   # warm-up
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name in variants:
            _sync(device)
            start = time.perf_counter()
            run_variant(name, embedding, kept_ids, device)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    reference = maps["naive" if "naive" in maps else variants[0]]
    results = []
    for name in variants:
        peak = cpu_peak(name, args) if device.type == "cpu" else cuda_peak(name, embedding, kept_ids, device)
        entry = {"variant": name, "median_s": round(median(times[name]), 3), "min_s": round(min(times[name]), 3),
                 "rows_per_s": round(mapped / median(times[name])), "peak_extra_mib": round(peak / 2**20, 1),
                 "rows_differing_from_reference": int((maps[name] != reference).sum())}
        if name != "naive":
            mib = int(name.split("-")[1])
            rows = min(chunk_rows_for(candidates, 4, mib << 20), mapped)
            entry["chunk_rows"] = rows
            floats = rows * candidates + candidates * args.hidden + rows * args.hidden
            entry["bound_mib"] = round(floats * 4 / 2**20, 1)
        else:
            entry["bound_mib"] = round(mapped * candidates * 4 / 2**20, 1)
        results.append(entry)
    name = f"slice_embeddings_{device.type}"
    save(name, {
        "benchmark": "slice_embeddings token map (inner product)", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "load_average_1m_before": round(load_before, 2),
        "vocab": args.vocab, "kept": args.kept, "hidden": args.hidden,
        "mapped_rows": mapped, "candidates": candidates, "dtype": "fp32", "repeats": args.repeats,
        "bound_mib_means": "chunked: score buffer + candidate matrix + one chunk of rows; naive: its score matrix",
        "results": results,
    }, args.output)


if __name__ == "__main__":
    main()

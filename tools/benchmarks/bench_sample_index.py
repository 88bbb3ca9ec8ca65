#!/usr/bin/env python
"""C++ sample index (megatron_glmd.data._helpers) against its NumPy reference, side by side.

    python tools/benchmarks/bench_sample_index.py [--tokens 50000000] [--epochs 1 4] [--repeats 5]

Synthetic corpus: document lengths log-normal around 400 tokens (median), enough documents for
--tokens tokens per epoch; windows of 512 tokens. Each repeat times the C++ build and then the
NumPy reference on the same input (and checks that they are identical); medians are reported.
The reference vectorises the random draws and the window cuts (cumsum + searchsorted); its two
Fisher-Yates shuffles are a Python-level loop because each swap depends on the previous ones.
"""
from __future__ import annotations

import argparse

import numpy as np

from _common import median, save, timed

from megatron_glmd.data.sample_index import build_sample_index, build_sample_index_reference


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=50_000_000, help="tokens per epoch")
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 4])
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", default="")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    lengths = np.maximum(1, rng.lognormal(np.log(400), 1.0, args.tokens // 600).astype(np.int64))
    lengths = lengths[np.cumsum(lengths) <= args.tokens]
    results = []
    for epochs in args.epochs:
        cpp_times, ref_times = [], []
        for _ in range(args.repeats):
            t_cpp, cpp = timed(build_sample_index, lengths, args.seq_length, epochs, 1234)
            t_ref, ref = timed(build_sample_index_reference, lengths, args.seq_length, epochs, 1234)
            assert all(np.array_equal(getattr(cpp, f), getattr(ref, f)) for f in ("doc_idx", "sample_idx",
                                                                                   "shuffle_idx"))
            cpp_times.append(t_cpp)
            ref_times.append(t_ref)
        results.append({"epochs": epochs, "tokens": int(lengths.sum()) * epochs, "samples": cpp.num_samples,
                        "documents": int(lengths.size) * epochs, "cpp_median_ms": round(median(cpp_times) * 1e3, 2),
                        "numpy_median_ms": round(median(ref_times) * 1e3, 2),
                        "speedup": round(median(ref_times) / median(cpp_times), 1)})
    save("sample_index", {"benchmark": "sample_index", "seq_length": args.seq_length, "repeats": args.repeats,
                          "tokens_per_epoch": int(lengths.sum()), "results": results}, args.output)


if __name__ == "__main__":
    main()

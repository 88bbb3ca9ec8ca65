#!/usr/bin/env python
"""count_vocab_freq throughput over a synthetic memory-mapped dataset (default 200 M tokens).

    python tools/benchmarks/bench_count_vocab_freq.py [--tokens 200000000] [--workers 1 2] [--repeats 5]

Synthetic data: Zipf(1.1)-distributed ids over a 32000-id vocabulary, uint16, documents of
log-normal length (median ~400 tokens), written once to --scratch. Every timed run counts the
whole dataset from the page cache (the first, untimed run warms it) with count_token_ids, the
function behind tools/count_vocab_freq.py, and its pool start-up is inside the timing. Runs of
the different worker counts are interleaved; the medians are reported.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from _common import median, save, timed

from megatron_glmd.data.indexed_dataset import IndexedDataset, IndexedDatasetWriter
from megatron_glmd.data.vocab_frequency import count_token_ids

VOCAB = 32000


def make_dataset(prefix: str, num_tokens: int, seed: int = 0) -> IndexedDataset:
    if os.path.exists(prefix + ".idx"):
        ds = IndexedDataset(prefix)
        if ds.num_tokens == num_tokens and ds.vocab_size == VOCAB:
            return ds
    rng = np.random.default_rng(seed)
    with IndexedDatasetWriter(prefix, VOCAB) as writer:
        remaining = num_tokens
        while remaining:
            n = min(remaining, 1 << 24)
            ids = np.minimum(rng.zipf(1.1, n), VOCAB - 10) + 9
            lengths = np.maximum(1, rng.lognormal(np.log(400), 1.0, n // 100 + 1).astype(np.int64))
            ends = np.cumsum(lengths)
            lengths = np.diff(np.concatenate([[0], ends[ends < n], [n]]))
            lengths = lengths[lengths > 0]
            writer.add_token_arrays(ids, lengths, np.ones(lengths.size, dtype=np.int64))
            remaining -= n
    return IndexedDataset(prefix)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=200_000_000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunk-tokens", type=int, default=1 << 24)
    p.add_argument("--scratch", default="/tmp/glmd_bench")
    p.add_argument("--output", default="")
    args = p.parse_args()
    os.makedirs(args.scratch, exist_ok=True)
    prefix = os.path.join(args.scratch, f"zipf_{args.tokens}")
    ds = make_dataset(prefix, args.tokens)
    reference = np.bincount(np.asarray(ds.tokens), minlength=VOCAB)  # one in-memory pass, for checking
    count_token_ids([prefix], VOCAB, workers=1, chunk_tokens=args.chunk_tokens, progress=False)  # warm cache
    times = {w: [] for w in args.workers}
    for _ in range(args.repeats):
        for w in args.workers:
            seconds, result = timed(count_token_ids, [prefix], VOCAB, workers=w, chunk_tokens=args.chunk_tokens,
                                    progress=False)
            assert np.array_equal(result.counts, reference), "counts differ from the in-memory bincount"
            times[w].append(seconds)
    save("count_vocab_freq", {
        "benchmark": "count_vocab_freq", "tokens": ds.num_tokens, "documents": ds.num_documents,
        "dtype": str(ds.dtype), "vocab_size": VOCAB, "chunk_tokens": args.chunk_tokens, "repeats": args.repeats,
        "results": [{"workers": w, "median_s": round(median(t), 4), "min_s": round(min(t), 4),
                     "median_m_tokens_per_s": round(ds.num_tokens / median(t) / 1e6, 1)} for w, t in times.items()],
    }, args.output)


if __name__ == "__main__":
    main()

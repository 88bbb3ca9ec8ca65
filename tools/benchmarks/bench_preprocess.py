#!/usr/bin/env python
"""preprocess_data throughput (MB/s of input text) with 1 and 2 worker processes.

    python tools/benchmarks/bench_preprocess.py [--megabytes 40] [--workers 1 2] [--repeats 3]

Input: Python's own documentation (pydoc_data.topics plus the docstrings in the standard
library's sources), repeated up to --megabytes of plain text in --scratch,
one paragraph per document. Tokenizer: a 8000-piece unigram model trained on that text with
tools/train_tokenizer.py's library function. Timing covers preprocess() end to end (pool
start-up, reading, sentence splitting, tokenising, writing); runs interleave worker counts.
"""
from __future__ import annotations

import argparse
import os

from _common import median, save, timed

from megatron_glmd.data.preprocess import preprocess
from megatron_glmd.data.python_docs import python_documents
from megatron_glmd.data.tokenizer import train_sentencepiece


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megabytes", type=float, default=40)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scratch", default="/tmp/glmd_bench")
    p.add_argument("--output", default="")
    args = p.parse_args()
    os.makedirs(args.scratch, exist_ok=True)
    paragraphs = python_documents(max_bytes=10**9)  # all of it
    unique = "\n\n".join(paragraphs)
    corpus = os.path.join(args.scratch, "docs_corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        written = 0
        while written < args.megabytes * 1e6:
            f.write(unique + "\n\n")
            written += len(unique.encode()) + 2
    train_text = os.path.join(args.scratch, "docs_unique.txt")
    with open(train_text, "w", encoding="utf-8") as f:
        f.write("\n".join(paragraphs))
    model = train_sentencepiece([train_text], 8000, os.path.join(args.scratch, "docs_spm"), num_threads=2)
    times = {w: [] for w in args.workers}
    stats = {}
    for _ in range(args.repeats):
        for w in args.workers:
            seconds, stats[w] = timed(preprocess, [corpus], os.path.join(args.scratch, f"docs_w{w}"), model,
                                      workers=w, progress=False)
            times[w].append(seconds)
    size = os.path.getsize(corpus)
    save("preprocess", {
        "benchmark": "preprocess", "input_mb": round(size / 1e6, 1), "unique_text_mb": round(len(unique) / 1e6, 2),
        "documents": stats[args.workers[0]].documents, "tokens": stats[args.workers[0]].tokens,
        "vocab_size": 8000, "repeats": args.repeats,
        "results": [{"workers": w, "median_s": round(median(t), 2), "median_mb_per_s": round(size / 1e6 / median(t), 2),
                     "median_m_tokens_per_s": round(stats[w].tokens / median(t) / 1e6, 2)} for w, t in times.items()],
    }, args.output)


if __name__ == "__main__":
    main()

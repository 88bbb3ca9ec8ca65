"""Kernels per transformer layer of both families (forward, recompute, backward), eager and compiled
(``model.compile``), on the CPU, for the planner's launch term.

``megatron_glmd.model.op_count.count_layer_ops`` counts a decoder layer the way it counts GLM's
(tools/benchmarks/bench_layer_compile.py): the innermost compute operators under
``torch.profiler``, eager, micro-batch 1. Counted at the tiny decoder's shape and at a
llama-3.2-1b-shaped layer (sequence 512) to show the count does not depend on the size; with and
without dropout (the Llama and Qwen presets train without); with Qwen2's Q/K/V biases; and GLM's
tiny-student layer beside them; then both tiny layers compiled as ``model.compile: on`` compiles them.
megatron_glmd/plan/launches.py reads its constants from this file's output
(tools/benchmarks/results/decoder_layer_ops_cpu.json).

Prints the JSON and saves it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from _common import save

import torch

from megatron_glmd.config import preset
from megatron_glmd.model.op_count import count_layer_ops

CASES = [  # (label, preset, overrides, sequence)
    ("tiny-decoder-student seq128 dropout=0.0", "tiny-decoder-student", dict(hidden_dropout=0.0, attention_dropout=0.0), 128),
    ("tiny-decoder-student seq128 dropout=0.1", "tiny-decoder-student", dict(hidden_dropout=0.1, attention_dropout=0.1), 128),
    ("tiny-decoder-student seq128 dropout=0.0 qkv_bias", "tiny-decoder-student",
     dict(hidden_dropout=0.0, attention_dropout=0.0, qkv_bias=True), 128),
    ("llama-3.2-1b seq512 dropout=0.0", "llama-3.2-1b", {}, 512),
    ("tiny-student (GLM) seq128 dropout=0.0", "tiny-student", dict(hidden_dropout=0.0, attention_dropout=0.0), 128),
    ("tiny-student (GLM) seq128 dropout=0.1", "tiny-student", dict(hidden_dropout=0.1, attention_dropout=0.1), 128),
]
COMPILED = [label for label in (c[0] for c in CASES) if label.startswith("tiny-") and "qkv_bias" not in label]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.manual_seed(0)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "micro_batch": 1,
              "kernels_per_layer": {}}
    for label, name, overrides, seq in CASES:
        print(f"counting {label}", file=sys.stderr, flush=True)
        ops = count_layer_ops(preset(name, **overrides), seq_length=seq)
        result["kernels_per_layer"][label] = {**dataclasses.asdict(ops), "total": ops.total}
        if label in COMPILED:
            print(f"counting {label} compiled", file=sys.stderr, flush=True)
            ops = count_layer_ops(preset(name, **overrides), seq_length=seq, compiled=True)
            result["kernels_per_layer"][label + " compiled"] = {**dataclasses.asdict(ops), "total": ops.total}
    result["load_average"] = os.getloadavg()
    save("decoder_layer_ops_cpu", result, args.out)


if __name__ == "__main__":
    main()

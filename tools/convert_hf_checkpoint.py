#!/usr/bin/env python
"""Import a Hugging Face Llama / Qwen2 / Mistral checkpoint as a megatron-glmd checkpoint
(model.architecture: decoder) at any tensor- and pipeline-parallel layout.

    python tools/convert_hf_checkpoint.py --source Llama-3.2-1B/ --output checkpoints/llama-1b-tp2 \\
        --tp 2 --pp 1 [--dtype bf16]

--source: a folder with config.json and model.safetensors, or a sharded model.safetensors.index.json
and its files. The model's fields all come from config.json (rope_theta and rope_scaling, default or
llama3; GQA; Qwen2's Q/K/V biases; tied or untied head). KV heads are split over TP when TP divides
num_key_value_heads and replicated when TP is a multiple of it. Prints what it read and wrote; on
bad input (a missing shard, another architecture, a head count TP cannot split, an unsupported
rope_scaling) prints one `error: <file>: <problem>` line, exits 1 and leaves no output behind.
tools/export_checkpoint.py writes the result back in the same layout.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="Hugging Face checkpoint folder (config.json, *.safetensors)")
    p.add_argument("--output", required=True, help="new megatron-glmd checkpoint folder (must not exist)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the runs that will load it")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size to lay the files out for")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="default: config.json's torch_dtype")
    args = p.parse_args(argv)
    from megatron_glmd.convert.hf_import import convert_hf_checkpoint
    return run(lambda: print(convert_hf_checkpoint(args.source, args.output, args.tp, args.pp, args.dtype)))


if __name__ == "__main__":
    sys.exit(main())

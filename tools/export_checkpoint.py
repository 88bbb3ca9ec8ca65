#!/usr/bin/env python
"""Export a megatron-glmd checkpoint (e.g. a trained student) in its family's Hugging Face layout.

    python tools/export_checkpoint.py --source runs/student --output exported/student [--torch-bin]

A decoder (model.architecture: decoder) is written as a Llama (or, with Q/K/V biases, Qwen2)
checkpoint, model.safetensors (--max-shard-size MB: shards and model.safetensors.index.json) and
config.json, which transformers.AutoModelForCausalLM.from_pretrained and
tools/convert_hf_checkpoint.py load; --architecture names the class (LlamaForCausalLM,
Qwen2ForCausalLM, MistralForCausalLM). A GLM is written as follows.

Writes model.safetensors (GLM's key names and fused-QKV layout, the embedding padded to a multiple
of 128 rows) and config.json; --torch-bin also writes pytorch_model.bin, the same plain state dict
for torch.load(weights_only=True). A compressed student's vocab_compression/ (kept ids, token map)
is copied beside them. tools/convert_glm_checkpoint.py reads the folder back exactly.
On bad input prints one `error: <file>: <problem>` line, exits 1 and leaves no output behind.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="a megatron-glmd checkpoint folder (config.yaml, latest)")
    p.add_argument("--output", required=True, help="new folder (must not exist)")
    p.add_argument("--tag", help="checkpoint tag to read (default: the one named by 'latest')")
    p.add_argument("--torch-bin", action="store_true", help="GLM: also write pytorch_model.bin")
    p.add_argument("--architecture", help="decoder: the Hugging Face class to write (default Llama, or Qwen2 "
                                          "with Q/K/V biases)")
    p.add_argument("--max-shard-size", type=int, metavar="MB", help="decoder: shard the safetensors at MB each")
    args = p.parse_args(argv)
    from megatron_glmd.convert.export import export_checkpoint
    shard = args.max_shard_size * 2 ** 20 if args.max_shard_size else None
    return run(lambda: print(export_checkpoint(args.source, args.output, args.tag, args.torch_bin,
                                               args.architecture, shard)))


if __name__ == "__main__":
    sys.exit(main())

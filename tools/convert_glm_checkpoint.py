#!/usr/bin/env python
"""Import a released GLM checkpoint (THUDM's Megatron shards or the Hugging Face hub layout) as a
megatron-glmd checkpoint at any tensor- and pipeline-parallel layout.

    python tools/convert_glm_checkpoint.py --source glm-10b/ --output checkpoints/glm-10b-tp4 \\
        --tp 4 --pp 1 --preset glm-10b [--tokenizer glm-10b/] [--dtype bf16]

--source: a folder with latest_checkpointed_iteration.txt and <iteration>/mp_rank_XX_model_states.pt
(any number of model-parallel shards, fp16 or fp32), a folder holding the shards themselves, or a
hub folder with pytorch_model.bin / model.safetensors (or a sharded *.index.json) and config.json.
The head count comes from --num-attention-heads, config.json or --preset; the real vocabulary
(GLM's command tokens included; GLM pads the embedding to a multiple of 128 rows) from
--vocab-size, --tokenizer (vocab.json + merges.txt or tokenizer.json) or --preset. GeLU follows
the source (Megatron: tanh, hub: erf) unless --gelu says otherwise. Prints what it read and wrote;
on bad input prints one `error: <file>: <problem>` line, exits 1 and leaves no output behind.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="GLM checkpoint folder or file")
    p.add_argument("--output", required=True, help="new megatron-glmd checkpoint folder (must not exist)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the runs that will load it")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size to lay the files out for")
    p.add_argument("--preset", help="a GLM preset (glm-base, glm-large, glm-2b, glm-10b): heads and vocabulary")
    p.add_argument("--num-attention-heads", type=int)
    p.add_argument("--vocab-size", type=int, help="real vocabulary size, command tokens included")
    p.add_argument("--tokenizer", help="GLM's tokenizer files; their vocabulary size is the model's")
    p.add_argument("--gelu", choices=("tanh", "erf"), help="default: tanh for THUDM's layout, erf for the hub's")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="default: the checkpoint's own")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from megatron_glmd.convert.glm_import import ImportOptions, convert_glm_checkpoint

    options = ImportOptions(preset=args.preset, num_attention_heads=args.num_attention_heads,
                            vocab_size=args.vocab_size, tokenizer=args.tokenizer, gelu=args.gelu, dtype=args.dtype)
    return run(lambda: print(convert_glm_checkpoint(args.source, args.output, args.tp, args.pp, options)))


if __name__ == "__main__":
    sys.exit(main())

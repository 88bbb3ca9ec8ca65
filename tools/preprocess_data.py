#!/usr/bin/env python
"""Tokenise plain text or JSONL into a memory-mapped indexed dataset (PREFIX.bin / PREFIX.idx).

    python tools/preprocess_data.py --input a.txt b.jsonl --output-prefix data/corpus \
        --tokenizer-model spm.model --workers 8
    python tools/preprocess_data.py --input a.jsonl --output-prefix data/corpus \
        --tokenizer-model llama3/tokenizer.json --tokenizer-type hf

Plain text: one document per blank-line-separated block. JSONL (.jsonl/.json): the text under
--json-key. Output appears atomically once every input was read without error.

--split-sentences auto (the default) splits documents into sentences, each tokenised on its own,
for GLM's tokenizers (blank infilling masks whole sentences) and keeps them whole for
--tokenizer-type hf (causal samples use no sentence boundaries). on / off force it
(--no-split-sentences = off). A byte-level BPE's sentences keep the whitespace before them, so a
split document has the same tokens as the whole one and decodes back to exactly its text.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402

SPLIT = {"auto": None, "on": True, "off": False}     # preprocess()'s split_into_sentences


def parse_args(argv=None):
    from megatron_glmd.data.tokenizer import TOKENIZER_TYPES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True)
    p.add_argument("--output-prefix", required=True)
    p.add_argument("--tokenizer-model", required=True,
                   help="SentencePiece .model, GLM's BPE files, or a Hugging Face tokenizer.json (with --tokenizer-type hf)")
    p.add_argument("--tokenizer-type", default="auto", choices=TOKENIZER_TYPES,
                   help="auto: .json files and folders are GLM's BPE, everything else SentencePiece")
    p.add_argument("--json-key", default="text")
    p.add_argument("--input-format", default="auto", choices=["auto", "text", "jsonl"],
                   help="auto: .jsonl/.json files are JSONL, everything else plain text")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--split-sentences", default="auto", choices=["auto", "on", "off"],
                   help="auto: off for --tokenizer-type hf (causal samples use no sentence boundaries), "
                        "on otherwise; off: no [sMASK] sentence spans for GLM")
    p.add_argument("--no-split-sentences", dest="split_sentences", action="store_const", const="off",
                   help="the same as --split-sentences off")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body():
        from megatron_glmd.data.preprocess import preprocess
        stats = preprocess(args.input, args.output_prefix, args.tokenizer_model, json_key=args.json_key,
                           workers=args.workers, input_format=args.input_format,
                           split_into_sentences=SPLIT[args.split_sentences], progress=not args.quiet,
                           tokenizer_type=args.tokenizer_type)
        print(f"wrote {args.output_prefix}.bin/.idx: {stats.documents} documents, {stats.sentences} sentences, "
              f"{stats.tokens} tokens from {stats.input_bytes / 1e6:.1f} MB in {stats.seconds:.2f} s "
              f"({stats.mb_per_s:.2f} MB/s, {stats.tokens_per_s / 1e6:.2f} M tokens/s, {args.workers} workers)")
    return run(body)


if __name__ == "__main__":
    sys.exit(main())

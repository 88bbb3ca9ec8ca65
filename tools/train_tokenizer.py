#!/usr/bin/env python
"""Train a SentencePiece model with GLM's special tokens at their fixed ids (ids 0..9).

    python tools/train_tokenizer.py --input corpus.txt --vocab-size 32000 --model-prefix out/spm
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="plain-text training files")
    p.add_argument("--vocab-size", type=int, required=True, help="vocabulary size including the 10 special tokens")
    p.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    p.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    p.add_argument("--character-coverage", type=float, default=0.9995)
    p.add_argument("--input-sentence-size", type=int, default=2_000_000,
                   help="sample at most this many lines for training")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body():
        from megatron_glmd.data.tokenizer import GLMTokenizer, train_sentencepiece
        start = time.perf_counter()
        model = train_sentencepiece(args.input, args.vocab_size, args.model_prefix, model_type=args.model_type,
                                    character_coverage=args.character_coverage,
                                    input_sentence_size=args.input_sentence_size, num_threads=args.threads)
        tok = GLMTokenizer(model)
        print(f"wrote {model} ({tok.vocab_size} ids; padded to {tok.padded_vocab_size(1)} at TP=1) "
              f"in {time.perf_counter() - start:.1f} s")
    return run(body)


if __name__ == "__main__":
    sys.exit(main())

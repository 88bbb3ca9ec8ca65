#!/usr/bin/env python
"""Count token ids over indexed datasets and rank the vocabulary for compression.

    python tools/count_vocab_freq.py --data-prefix data/corpus --tokenizer-model spm.model \
        --output freq.tsv [--protected-tokens verbalizers.txt] [--workers 8]

Writes a TSV `id<TAB>token<TAB>count<TAB>rank<TAB>role`, one row per id: rank 0 first is
every protected token (the tokenizer's special tokens and the pieces listed one per line in
--protected-tokens) in id order, then descending count, ties by id; role is `special`,
`protected` or `ordinary`. Tokens holding a tab, newline or `"` are quoted (csv's excel-tab
dialect), so `csv.reader(f, dialect="excel-tab")` and `pandas.read_csv(path, sep="\t")` read it.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402


def parse_args(argv=None):
    from megatron_glmd.data.tokenizer import TOKENIZER_TYPES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-prefix", nargs="+", required=True)
    p.add_argument("--tokenizer-model", required=True,
                   help="SentencePiece .model, GLM's BPE files (a folder, vocab.json or tokenizer.json), "
                        "or a Hugging Face tokenizer.json (with --tokenizer-type hf)")
    p.add_argument("--tokenizer-type", default="auto", choices=TOKENIZER_TYPES,
                   help="auto: .json files and folders are GLM's BPE, everything else SentencePiece")
    p.add_argument("--output", required=True)
    p.add_argument("--protected-tokens", help="file with one vocabulary piece per line")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--chunk-tokens", type=int, default=1 << 24)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body():
        from megatron_glmd.data.errors import DataError
        from megatron_glmd.data.tokenizer import load_tokenizer
        from megatron_glmd.compress.ranking import rank_vocabulary, special_token_ids
        from megatron_glmd.data.vocab_frequency import count_token_ids, read_protected_tokens, write_frequency_tsv
        tok = load_tokenizer(args.tokenizer_model, args.tokenizer_type)
        protected = read_protected_tokens(args.protected_tokens, tok.token_to_id) if args.protected_tokens else []
        out_dir = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(out_dir):
            raise DataError(f"output directory {out_dir!r} does not exist")
        result = count_token_ids(args.data_prefix, tok.vocab_size, workers=args.workers,
                                 chunk_tokens=args.chunk_tokens, progress=not args.quiet)
        specials = special_token_ids(tok)
        order = rank_vocabulary(result.counts, specials + protected)
        write_frequency_tsv(args.output, tok.tokens(), result.counts, order, special_ids=specials,
                            protected_ids=protected)
        seen = int((result.counts > 0).sum())
        print(f"wrote {args.output}: {tok.vocab_size} ids ({seen} seen), {result.tokens} tokens counted in "
              f"{result.seconds:.2f} s ({result.tokens_per_s / 1e6:.1f} M tokens/s, {result.processes} processes)")
    return run(body)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Write a vocabulary-compression artifact from a teacher checkpoint and a frequency table.

    python tools/slice_embeddings.py --teacher runs/teacher --frequencies freq.tsv --ratio 0.5 \
        --output vc/ [--mapping inner|cosine|euclidean|unk] [--student-model tiny-student]

--teacher is a megatron-glmd checkpoint directory (any TP/PP, either model family; an untied
decoder's sliced matrix comes from its output layer, the token map from its word embedding);
--frequencies the table written by tools/count_vocab_freq.py for the teacher's tokenizer (a
tokenizer.json with --tokenizer-type hf too). A decoder teacher may have more embedding rows than
the tokenizer has ids (Qwen2.5: 152,064 rows, 151,665 ids): the artifact covers the table's v ids,
and the rows past them, which no token id reaches, are never ranked, mapped or kept.

Keeps K = ceil(v · r_v / 128) · 128 top-ranked tokens (or --kept K), maps every dropped token to a
kept ordinary token by the teacher's word-embedding rows (chunks of the v × K scores on a GPU when
there is one, with a progress bar), and writes the directory --output atomically:
tensors.safetensors (kept_ids, token_map, teacher_output_weight) and summary.json, which it also
prints. --student-model (a model YAML or a preset name) adds the student parameters saved. Every
bad input stops before the mapping starts with one line `error: <file or option>: ...`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402

MAPPINGS = ("inner", "cosine", "euclidean", "unk")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="megatron-glmd checkpoint directory of the teacher")
    p.add_argument("--frequencies", required=True, help="TSV from tools/count_vocab_freq.py")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--ratio", type=float, help="r_v in (0, 1]: K = ceil(v * r_v / 128) * 128")
    size.add_argument("--kept", type=int, help="K, the number of kept tokens")
    p.add_argument("--output", required=True, help="artifact directory to create")
    p.add_argument("--mapping", choices=MAPPINGS, default="inner")
    p.add_argument("--unk-token", default="[UNK]", help="the special token the unk mapping targets")
    p.add_argument("--student-model", help="student model YAML or preset name, for the parameters saved")
    p.add_argument("--device", default="auto", help="auto (a GPU when available), cpu, cuda, cuda:N")
    p.add_argument("--chunk-mib", type=int, default=256, help="size of one chunk of scores")
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body():
        from megatron_glmd.convert.errors import ConvertError
        from megatron_glmd.data.errors import DataError

        def step(where, fn, *a, **kw):
            """Run one step; its error becomes one line that starts with ``where`` (file or option)."""
            try:
                return fn(*a, **kw)
            except (DataError, ConvertError, ValueError) as exc:
                text = str(exc)
                raise DataError(text if text.startswith(where) else f"{where}: {text}") from None

        from megatron_glmd.compress.artifact import check_output_path, write_artifact
        from megatron_glmd.compress.slicing import (check_teacher_vocabulary, compress_vocabulary, kept_ids_for,
                                                    unk_id_for)
        from megatron_glmd.config import load_config, preset
        from megatron_glmd.convert.glmd_checkpoint import EMBEDDING, read_checkpoint, read_model_config
        from megatron_glmd.data.vocab_frequency import read_frequency_tsv

        table = step(args.frequencies, read_frequency_tsv, args.frequencies)
        field = "--ratio" if args.ratio is not None else "--kept"
        kept = step(field, kept_ids_for, table, ratio=args.ratio, kept_size=args.kept)
        unk_id = step("--unk-token", unk_id_for, table, args.unk_token) if args.mapping == "unk" else None
        step("--output", check_output_path, args.output, overwrite=args.overwrite)
        if args.chunk_mib < 1:
            raise DataError(f"--chunk-mib: must be at least 1, got {args.chunk_mib}")
        width = None
        if args.student_model:
            load = load_config if os.path.isfile(args.student_model) else preset
            student = step("--student-model", load, args.student_model)
            width = student.embedding_size or student.hidden_size
        where = os.path.join(args.teacher, "config.yaml")
        teacher_config, _, _ = step(args.teacher, read_model_config, args.teacher)
        # A decoder's vocab_size is its embedding's rows, which may exceed the tokenizer's ids (Qwen2.5).
        step(where, check_teacher_vocabulary, table, teacher_config.vocab_size, decoder=teacher_config.is_decoder)
        if teacher_config.embedding_size:
            raise DataError(f"{where}: embedding_size: a factorised teacher embedding is not supported")

        _, state = step(args.teacher, read_checkpoint, args.teacher)
        start = time.perf_counter()
        # An untied decoder's output layer (model/decoder.py) is what its teacher decodes with.
        artifact = compress_vocabulary(state[EMBEDDING], table, kept, mapping=args.mapping, ratio=args.ratio,
                                       unk_id=unk_id, student_width=width, output_matrix=state.get("lm_head"),
                                       teacher_rows=teacher_config.vocab_size,
                                       device=None if args.device == "auto" else args.device,
                                       max_chunk_bytes=args.chunk_mib << 20, progress=not args.quiet)
        seconds = time.perf_counter() - start
        artifact.summary["sources"] = {"teacher": os.path.abspath(args.teacher),
                                       "frequency_table": os.path.abspath(args.frequencies)}
        write_artifact(args.output, artifact, overwrite=args.overwrite)
        print_summary(args.output, artifact.summary, seconds)
    return run(body)


def print_summary(path: str, s: dict, seconds: float) -> None:
    v, k = s["vocab_size"], s["kept_size"]
    ratio = f" (r_v = {s['ratio']})" if s["ratio"] is not None else ""
    print(f"wrote {path}: kept K = {k} of {v} ids{ratio}, mapping {s['mapping']}, {seconds:.2f} s")
    if s["corpus_coverage"] is not None:
        print(f"  corpus tokens covered by the kept set: {100 * s['corpus_coverage']:.2f} %")
    print(f"  ids mapped to themselves: {100 * s['self_mapped_fraction']:.2f} %")
    teacher_rows = s.get("teacher", {}).get("vocab_rows", v)
    if teacher_rows > v:
        print(f"  teacher embedding rows: {teacher_rows}; the {teacher_rows - v} past the tokenizer's ids are not read")
    saved = s["student_parameters_saved"]
    rows = s["student_embedding_rows_saved"]
    print(f"  student embedding rows saved: {rows}" + (f" ({saved:,} parameters)" if saved else ""))
    spread = s["map_spread"]
    if spread:
        print(f"  map spread: {spread['dropped_ids']} dropped ids ({100 * spread['fraction_of_dropped']:.2f} %) "
              f"map to id {spread['target_id']} {spread['target_token']!r}")


if __name__ == "__main__":
    sys.exit(main())

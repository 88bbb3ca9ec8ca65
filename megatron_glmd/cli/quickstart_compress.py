"""The steps of ``glmd-quickstart --compress-vocab R`` (docs/design.md, "Vocabulary compression").

After the quickstart's teacher and GLMD student: count token frequencies over the training split
(the table tools/count_vocab_freq.py writes), slice the teacher's embeddings into an artifact at
r_v = R (what tools/slice_embeddings.py writes), then (in :mod:`.quickstart`) distil a student of K
tokens from the same teacher for the same steps, and print it next to the full-vocabulary student,
both measured over the kept tokens (:func:`megatron_glmd.compress.evaluate.kept_token_metrics`).
"""
from __future__ import annotations

import os
from typing import List, Tuple


def count_frequencies(workdir: str, tokenizer_model: str, tokenizer_type: str, log=print) -> str:
    """``workdir/data/frequencies.tsv``: the training split's token counts and the vocabulary ranking
    (ids of the tokenizer ``tokenizer_model`` of type ``tokenizer_type``)."""
    from ..compress.ranking import rank_vocabulary, special_token_ids
    from ..data.tokenizer import load_tokenizer
    from ..data.vocab_frequency import count_token_ids, write_frequency_tsv

    data = os.path.join(workdir, "data")
    tokenizer = load_tokenizer(tokenizer_model, tokenizer_type)
    result = count_token_ids([os.path.join(data, "train")], tokenizer.vocab_size, progress=False)
    specials = special_token_ids(tokenizer)
    path = os.path.join(data, "frequencies.tsv")
    write_frequency_tsv(path, tokenizer.tokens(), result.counts, rank_vocabulary(result.counts, specials),
                        special_ids=specials)
    log(f"      frequencies: {result.tokens:,} training tokens counted, {int((result.counts > 0).sum())} of "
        f"{tokenizer.vocab_size} ids seen -> {path}")
    return path


def slice_teacher(workdir: str, teacher_dir: str, frequencies: str, ratio: float, student_width: int,
                  log=print) -> str:
    """The artifact ``workdir/vocab_r<R>`` of the teacher's word embedding (inner-product map); an
    untied decoder teacher's sliced matrix is its output layer's rows (``lm_head``), as
    tools/slice_embeddings.py writes it."""
    from ..compress.artifact import write_artifact
    from ..compress.slicing import compress_vocabulary, kept_ids_for
    from ..convert.glmd_checkpoint import EMBEDDING, read_checkpoint
    from ..data.vocab_frequency import read_frequency_tsv

    table = read_frequency_tsv(frequencies)
    kept = kept_ids_for(table, ratio=ratio)
    _, state = read_checkpoint(teacher_dir)
    artifact = compress_vocabulary(state[EMBEDDING], table, kept, mapping="inner", ratio=ratio,
                                   student_width=student_width, progress=False, output_matrix=state.get("lm_head"))
    artifact.summary["sources"] = {"teacher": teacher_dir, "frequency_table": frequencies}
    path = write_artifact(os.path.join(workdir, f"vocab_r{ratio:g}"), artifact, overwrite=True)
    s = artifact.summary
    log(f"      artifact {path}: K = {s['kept_size']} of {s['vocab_size']} ids, training tokens covered "
        f"{100 * s['corpus_coverage']:.2f} %, ids mapped to themselves {100 * s['self_mapped_fraction']:.2f} %, "
        f"student parameters saved {s['student_parameters_saved']:,}")
    return path


def compare(students: List[Tuple[str, str]], teacher_dir: str, artifact: str, valid_data) -> List[Tuple[str, dict]]:
    """``(label, metrics over the kept tokens)`` of each ``(label, checkpoint directory)``."""
    from ..compress.evaluate import kept_token_metrics

    return [(label, kept_token_metrics(path, teacher_dir, artifact, valid_data, len(valid_data)))
            for label, path in students]


def print_comparison(rows: List[Tuple[str, dict]], ratio: float, kept: int, vocab: int,
                     loss_name: str = "blank-infilling loss") -> None:
    print(f"vocabulary compression, r_v = {ratio:g}: K = {kept} of {vocab} ids (held-out, over the kept tokens;"
          " losses at the mapped targets)")
    print(f"  {'model':<38}{'parameters':>12}{'KL to teacher':>16}{loss_name:>22}"
          f"{'targets outside K':>19}")
    for label, m in rows:
        print(f"  {label:<38}{m['parameters']:>12,}{m['kl']:>16.4f}{m['student_loss']:>22.4f}"
              f"{100 * m['targets_outside_kept']:>17.2f} %")
    full, small = rows[0][1]["kl"], rows[-1][1]["kl"]
    print(f"  KL of the compressed student: {100 * (small - full) / full:+.1f} % against the full-vocabulary "
          "student's at equal steps")

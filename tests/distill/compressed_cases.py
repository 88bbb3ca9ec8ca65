"""Vocabulary-compression artifacts for the engine tests, built with the compress library.

The synthetic samples (:mod:`tests.distill.synthetic`) use ids 0 (pad) and 5..v-1; ids 0..4 play the
special tokens. The frequency table counts the training samples' input ids, as
tools/count_vocab_freq.py counts a corpus.
"""
import dataclasses

import numpy as np

from megatron_glmd.compress.artifact import write_artifact
from megatron_glmd.compress.ranking import rank_vocabulary
from megatron_glmd.compress.slicing import compress_vocabulary, kept_ids_for
from megatron_glmd.config.run import VocabCompressionConfig
from megatron_glmd.convert.glmd_checkpoint import EMBEDDING, read_checkpoint
from megatron_glmd.data.vocab_frequency import FrequencyTable

SPECIALS = list(range(5))


def tokens(vocab_size):
    return [f"[S{i}]" if i in SPECIALS else f"t{i}" for i in range(vocab_size)]


def frequency_table(dataset, vocab_size) -> FrequencyTable:
    counts = np.zeros(vocab_size, dtype=np.int64)
    for i in range(len(dataset)):
        sample = dataset[i]
        counts += np.bincount(sample["input_ids"][:sample["length"]], minlength=vocab_size)
    roles = ["special" if i in SPECIALS else "ordinary" for i in range(vocab_size)]
    return FrequencyTable(tokens(vocab_size), counts, rank_vocabulary(counts, SPECIALS), roles)


def build_artifact(teacher_dir: str, path: str, dataset, kept_size: int, mapping: str = "inner") -> str:
    """The artifact of ``teacher_dir``'s word embedding: the top ``kept_size`` ids of ``dataset``."""
    _, state = read_checkpoint(teacher_dir)
    table = frequency_table(dataset, state[EMBEDDING].shape[0])
    kept = kept_ids_for(table, kept_size=kept_size)
    return write_artifact(path, compress_vocabulary(state[EMBEDDING], table, kept, mapping=mapping, progress=False))


def compressed(cfg, artifact: str):
    """``cfg`` with a ``vocab_compression`` section (``model.vocab_size`` left at v: derived as K)."""
    return dataclasses.replace(cfg, vocab_compression=VocabCompressionConfig(artifact=artifact))

"""Vocabulary compression (docs/design.md, "Vocabulary compression"; the paper's GLMD-vc).

Modules (imported explicitly; this package import stays free of torch so that
``tools/count_vocab_freq.py`` can rank without it):

``ranking``    the vocabulary ranking (protected first, then by count) and the kept set ``w_c``
``token_map``  every dropped id to a kept ordinary id by the teacher's embedding rows
               (``inner | cosine | euclidean | unk``), in bounded memory, on a GPU if present
``artifact``   :class:`~.artifact.VocabCompression` (kept ids, token map, the teacher's sliced
               output matrix, summary), written atomically and loaded with checks
``slicing``    the steps from a teacher embedding and a frequency table to the artifact
               (``tools/slice_embeddings.py`` is a thin CLI over them)
``evaluate``   held-out KL and loss of any student over the kept tokens (one process, TP = 1)

A training run uses the artifact through ``megatron_glmd.distill.vocab_compression``.

Counting token ids stays in ``megatron_glmd.data.vocab_frequency``, which also reads and
writes the frequency table.
"""
from .ranking import kept_token_ids, kept_vocab_size, rank_vocabulary, special_token_ids

__all__ = ["kept_token_ids", "kept_vocab_size", "rank_vocabulary", "special_token_ids"]

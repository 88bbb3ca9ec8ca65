"""A small deterministic blank-infilling-shaped dataset for engine tests (no tokenizer needed)."""
import numpy as np


class SyntheticGLMSamples:
    """Sample i is a function of (seed, i) only: Part A text, Part B spans, 2D positions, padding.

    The "text" is drawn from a Zipf distribution so that models lower their loss within a few steps.
    """

    def __init__(self, num_samples: int, seq_length: int, vocab_size: int, seed: int = 0, pad_id: int = 0):
        self.n, self.s, self.v, self.seed, self.pad = num_samples, seq_length, vocab_size, seed, pad_id

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, i])
        s = self.s
        length = int(rng.integers(s * 3 // 4, s + 1))
        sep = int(rng.integers(length // 2, length * 3 // 4))
        # Zipf-distributed tokens (ids 5.. by rank): the skewed unigram is learnable in a few steps.
        ranks = np.arange(1, self.v - 4)
        probs = 1.0 / ranks
        text = rng.choice(ranks, size=length + 1, p=probs / probs.sum()) + 4
        input_ids = np.full(s, self.pad, dtype=np.int64)
        target_ids = np.full(s, self.pad, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        position_ids = np.zeros((2, s), dtype=np.int64)
        input_ids[:sep] = text[:sep]
        position_ids[0, :sep] = np.arange(sep)
        input_ids[sep:length] = text[sep - 1:length - 1]     # shifted: predict the next token
        target_ids[sep:length] = text[sep:length]
        loss_mask[sep:length] = 1.0
        position_ids[0, sep:length] = sep - 1
        position_ids[1, sep:length] = np.arange(1, length - sep + 1)
        return dict(input_ids=input_ids, target_ids=target_ids, position_ids=position_ids,
                    loss_mask=loss_mask, sep=sep, length=length)

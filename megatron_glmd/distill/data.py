"""Build the training and validation sample datasets of a run from its ``data`` section."""
from __future__ import annotations

from typing import Optional, Tuple

from ..config import ConfigError
from ..data.blank_infilling import BlankInfillingConfig
from ..data.errors import DataError
from ..data.glm_dataset import BlankInfillingDataset
from ..data.indexed_dataset import IndexedDataset
from ..data.tokenizer import SpecialIds, load_tokenizer, special_ids
from ..config import RunConfig
from . import vocab_compression


def check_tokenizer(cfg: RunConfig):
    """The run's tokenizer (SentencePiece model or GLM's BPE files), whose vocabulary must be the model's
    (with a compressed vocabulary: the artifact's, :mod:`.vocab_compression`)."""
    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer_model)
    except (DataError, OSError) as e:
        raise ConfigError(f"data.tokenizer_model: {e}") from None
    if cfg.vocab_compression.artifact is not None:
        vocab_compression.check_tokenizer(cfg, tokenizer)
        return tokenizer
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} but the tokenizer {cfg.data.tokenizer_model} "
                          f"has {tokenizer.vocab_size} tokens: set model.vocab_size to {tokenizer.vocab_size}")
    return tokenizer


def _dataset(prefix: str, cfg: RunConfig, ids: SpecialIds, num_samples: int, seed: int,
             field: str = "data.train_prefix") -> BlankInfillingDataset:
    try:
        indexed = IndexedDataset(prefix)
        if indexed.vocab_size != cfg.model.vocab_size:
            # The .idx records the vocabulary its ids come from: another tokenizer's ids would index
            # the wrong embedding rows (or past the table, mid-run).
            raise ConfigError(f"{field}: {prefix}.idx holds ids of a {indexed.vocab_size}-token vocabulary, but the "
                              f"tokenizer {cfg.data.tokenizer_model} and the model have {cfg.model.vocab_size}: "
                              "preprocess the corpus with the run's tokenizer")
        return BlankInfillingDataset(indexed, BlankInfillingConfig(seq_length=cfg.data.seq_length,
                                                                   task_mask=cfg.data.task_mask), ids,
                                     seed=seed, num_samples=num_samples,
                                     mode_group_size=cfg.train.global_batch_size)
    except DataError as e:
        raise ConfigError(f"{field}: {prefix}: {e}") from None


def build_datasets(cfg: RunConfig) -> Tuple[BlankInfillingDataset, Optional[BlankInfillingDataset]]:
    """Training samples for every iteration of the run, and ``eval_iters`` global batches of validation."""
    ids = special_ids(check_tokenizer(cfg))       # every special id of the samples is the tokenizer's
    batch = cfg.train.global_batch_size
    train = _dataset(cfg.data.train_prefix, cfg, ids, cfg.train.iterations * batch, cfg.data.seed)
    valid = None
    if cfg.data.valid_prefix:
        valid = _dataset(cfg.data.valid_prefix, cfg, ids, cfg.logging.eval_iters * batch, cfg.data.seed + 1,
                         field="data.valid_prefix")
    return train, valid

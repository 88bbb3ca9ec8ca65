"""Build the training and validation sample datasets of a run from its ``data`` section.

The model family picks the samples: GLM reads blank-infilling samples (:mod:`..data.glm_dataset`),
the decoder family packed causal samples (:mod:`..data.causal_dataset`) from the same indexed
datasets. A decoder's ``data.tokenizer_type: auto`` reads a ``tokenizer.json`` as a Hugging Face
tokenizer (``hf``) rather than GLM's BPE.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from ..config import ConfigError
from ..data.blank_infilling import BlankInfillingConfig
from ..data.causal_dataset import CausalDataset
from ..data.errors import DataError
from ..data.glm_dataset import BlankInfillingDataset
from ..data.indexed_dataset import IndexedDataset
from ..data.tokenizer import load_tokenizer, special_ids
from ..config import RunConfig
from ..config.run import check_decoder_run
from . import vocab_compression

Dataset = Union[BlankInfillingDataset, CausalDataset]


def is_decoder(cfg: RunConfig) -> bool:
    return cfg.model.is_decoder


def tokenizer_type(cfg: RunConfig) -> str:
    """``data.tokenizer_type``, with ``auto`` resolved for the decoder family: a ``.model`` file is
    SentencePiece, anything else (a ``tokenizer.json`` or its folder) a Hugging Face tokenizer."""
    kind = cfg.data.tokenizer_type
    if kind == "auto" and is_decoder(cfg):
        kind = "sentencepiece" if cfg.data.tokenizer_model.endswith(".model") else "hf"
    return kind


def check_tokenizer(cfg: RunConfig):
    """The run's tokenizer (SentencePiece model, GLM's BPE files or a ``tokenizer.json``), whose vocabulary
    must be the model's (with a compressed vocabulary: the artifact's, :mod:`.vocab_compression`). A decoder's
    embedding may have more rows than its tokenizer has ids (Qwen2's 152,064 rows for 151,665 ids)."""
    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer_model, tokenizer_type(cfg))
    except (DataError, OSError) as e:
        raise ConfigError(f"data.tokenizer_model: {e}") from None
    if not is_decoder(cfg) and tokenizer.mask_id is None:
        raise ConfigError(f"data.tokenizer_model: {cfg.data.tokenizer_model} has no [MASK]/[CLS]/[sop] tokens for "
                          "GLM's blank infilling (a plain tokenizer.json serves model.architecture: decoder)")
    if cfg.vocab_compression.artifact is not None:
        vocab_compression.check_tokenizer(cfg, tokenizer)
        return tokenizer
    fits = tokenizer.vocab_size <= cfg.model.vocab_size if is_decoder(cfg) else \
        tokenizer.vocab_size == cfg.model.vocab_size
    if not fits:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} but the tokenizer {cfg.data.tokenizer_model} "
                          f"has {tokenizer.vocab_size} tokens: set model.vocab_size to {tokenizer.vocab_size}")
    return tokenizer


def _dataset(prefix: str, cfg: RunConfig, tokenizer, num_samples: int, seed: int,
             field: str = "data.train_prefix") -> Dataset:
    try:
        indexed = IndexedDataset(prefix)
        if indexed.vocab_size != tokenizer.vocab_size:
            # The .idx records the vocabulary its ids come from: another tokenizer's ids would index
            # the wrong embedding rows (or past the table, mid-run).
            raise ConfigError(f"{field}: {prefix}.idx holds ids of a {indexed.vocab_size}-token vocabulary, but the "
                              f"tokenizer {cfg.data.tokenizer_model} has {tokenizer.vocab_size}: "
                              "preprocess the corpus with the run's tokenizer")
        if is_decoder(cfg):
            return CausalDataset(indexed, cfg.data.seq_length, tokenizer.eod_id, tokenizer.pad_id, seed=seed,
                                 num_samples=num_samples)
        return BlankInfillingDataset(indexed, BlankInfillingConfig(seq_length=cfg.data.seq_length,
                                                                   task_mask=cfg.data.task_mask),
                                     special_ids(tokenizer), seed=seed, num_samples=num_samples,
                                     mode_group_size=cfg.train.global_batch_size)
    except DataError as e:
        raise ConfigError(f"{field}: {prefix}: {e}") from None


def build_datasets(cfg: RunConfig) -> Tuple[Dataset, Optional[Dataset]]:
    """Training samples for every iteration of the run, and ``eval_iters`` global batches of validation."""
    cfg.data.validate()
    check_decoder_run(cfg)
    tokenizer = check_tokenizer(cfg)      # every special id of the samples is the tokenizer's
    batch = cfg.train.global_batch_size
    train = _dataset(cfg.data.train_prefix, cfg, tokenizer, cfg.train.iterations * batch, cfg.data.seed)
    valid = None
    if cfg.data.valid_prefix:
        valid = _dataset(cfg.data.valid_prefix, cfg, tokenizer, cfg.logging.eval_iters * batch, cfg.data.seed + 1,
                         field="data.valid_prefix")
    return train, valid

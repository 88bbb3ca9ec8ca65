"""A Hugging Face ``tokenizer.json`` (Llama-3, Qwen2, Mistral, any ``tokenizers`` file) as a tokenizer.

The decoder family's models come with a ``tokenizer.json``; its ids are used as they are (no ids
are appended, unlike GLM's command tokens in :mod:`.glm_bpe`). The special ids the data pipeline
needs are read from the file's own vocabulary, by the names those families give them:

========  =========================================================  ==========================
 role      tokens looked for, in this order                           when none is present
========  =========================================================  ==========================
 eod_id    ``<|end_of_text|>`` ``<|endoftext|>`` ``</s>`` ``<eos>``    refused: causal samples
                                                                      separate documents by it
 bos_id    ``<|begin_of_text|>`` ``<s>`` ``<bos>``                     None (Qwen2 has none)
 unk_id    the BPE/Unigram model's unk token, ``<unk>``               None (byte-level BPEs)
 pad_id    ``<pad>`` ``<|pad|>`` ``[PAD]``                             ``eod_id`` (Llama-3, Qwen2)
========  =========================================================  ==========================

A tokenizer without a pad token (Llama-3's) pads with its end-of-document id, as GLM's GPT-2 BPE
does: nothing downstream finds padding by comparing ids with ``pad_id`` (an EOD inside the text is
a real token); padding is what lies past a sample's ``length``.

Encoding never inserts BOS/EOS (``add_special_tokens=False``) and never matches special tokens in
raw text (``encode_special_tokens``): a document that contains the string ``<|endoftext|>`` stays
one document. Decoding drops special tokens.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional, Sequence

from .errors import DataError
from .tokenizer_base import TokenizersBackend

EOD_NAMES = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>")
BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>")
PAD_NAMES = ("<pad>", "<|pad|>", "[PAD]")
UNK_NAMES = ("<unk>",)
BYTE_ALPHABET = 256     # a byte-level BPE's base symbols, one per byte value


def _byte_level(pre_tokenizer) -> bool:
    """Whether a ``tokenizer.json``'s pre-tokenizer is byte-level (GPT-2, Llama-3, Qwen2: a word's leading
    space is in its token); a Metaspace one (SentencePiece-style) adds its own word boundary instead."""
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "Sequence":
        return any(_byte_level(p) for p in pre_tokenizer.get("pretokenizers", []))
    return pre_tokenizer.get("type") == "ByteLevel"


def tokenizer_json_path(path: str) -> str:
    """``path`` itself, or ``path/tokenizer.json`` for a folder; DataError if there is none."""
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing (a Hugging Face tokenizer needs its tokenizer.json)")
    return path


class HFTokenizer(TokenizersBackend):
    """Encode/decode with a ``tokenizer.json``; special ids from its vocabulary (module docstring)."""

    # GLM's blank-infilling roles: a decoder's samples have none of them.
    cls_id = sep_id = mask_id = smask_id = gmask_id = sop_id = eop_id = dblock_id = None

    def __init__(self, path):
        from tokenizers import Tokenizer

        self.model_file = tokenizer_json_path(os.fspath(path))
        try:
            tok = Tokenizer.from_file(self.model_file)
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception for every parse error
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise DataError(f"{self.model_file}: not a Hugging Face tokenizer.json ({lines[0]})") from None
        tok.encode_special_tokens = True
        self._tok = tok
        # The pre-tokenizer's own JSON (its pickled state), not tok.to_str(): that re-serialises the whole
        # vocabulary and merges (megabytes for Llama-3) at every load.
        pre = tok.pre_tokenizer
        self.keeps_leading_whitespace = pre is not None and _byte_level(json.loads(pre.__getstate__()))
        vocab = tok.get_vocab(with_added_tokens=True)
        n = tok.get_vocab_size(with_added_tokens=True)
        if sorted(vocab.values()) != list(range(n)):
            raise DataError(f"{self.model_file}: token ids are not 0..{n - 1} without gaps")
        self._vocab_size = n
        self.eod_id = self._first(vocab, EOD_NAMES)
        if self.eod_id is None:
            raise DataError(f"{self.model_file}: has no end-of-document token (none of {', '.join(EOD_NAMES)}); "
                            "causal samples separate documents by it")
        self.bos_id = self._first(vocab, BOS_NAMES)
        model_unk = getattr(tok.model, "unk_token", None)
        self.unk_id = self._first(vocab, ((model_unk,) if isinstance(model_unk, str) else ()) + UNK_NAMES)
        pad = self._first(vocab, PAD_NAMES)
        self.pad_id = self.eod_id if pad is None else pad

    @staticmethod
    def _first(vocab: dict, names: Sequence[str]) -> Optional[int]:
        return next((vocab[name] for name in names if name in vocab), None)

    @property
    def vocab_size(self) -> int:
        """Every id of the file, added tokens included (Llama-3: 128,256)."""
        return self._vocab_size

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` without the special tokens (EOD, BOS, pad, ...)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def id_to_token(self, token_id: int) -> str:
        token = self._tok.id_to_token(int(token_id))
        if token is None:
            raise self._unknown_id(token_id)
        return token

    def token_to_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise self._unknown_token(token)
        return token_id


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, path: str,
                         special_tokens: Sequence[str] = ("<|endoftext|>",)):
    """Train a GPT-2-style byte-level BPE with Hugging Face ``tokenizers`` on ``texts`` and write it
    to ``path`` as a ``tokenizer.json`` (atomically); returns the ``tokenizers.Tokenizer``.

    ``special_tokens`` take the first ids (the default's ``<|endoftext|>`` is the EOD that
    :class:`HFTokenizer` looks for; a Llama-3 style file: ``("<|begin_of_text|>", "<|end_of_text|>")``).
    All 256 byte symbols are in the vocabulary whatever the text, so any string encodes without an
    unknown token: the vocabulary holds ``len(special_tokens) + 256`` ids at least.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ..atomic_io import atomic_write_text

    floor = len(special_tokens) + BYTE_ALPHABET
    if vocab_size < floor:
        raise DataError(f"vocab size {vocab_size} is below the {floor} ids of the special tokens and the byte "
                        "alphabet")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    atomic_write_text(os.fspath(path), tok.to_str())
    return tok

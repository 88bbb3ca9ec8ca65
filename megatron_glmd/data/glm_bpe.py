"""GLM's GPT-2 BPE tokenizer (the released GLM-2B/10B vocabulary) with its command tokens.

GLM (``data_utils/tokenization.py``, ``GPT2BPETokenizer`` with block symbols and task masks)
keeps the GPT-2 vocabulary of ``n`` ids (``n = 50257``: ``<|endoftext|>`` is id 50256, GLM's pad
and end-of-document token) and appends eight command tokens after it:

=====  ==================  =========================
 id    token               role
=====  ==================  =========================
 n     ``<|startofpiece|>``  [sop], starts a Part-B span
 n+1   ``<|endofpiece|>``    [eop], ends a Part-B span
 n+2   ``[CLS]``             first token of a sample
 n+3   ``[MASK]``            blank-infilling span mask
 n+4   ``[SEP]``             separator
 n+5   ``[UNK]``             unknown
 n+6   ``[gMASK]``           prefix-LM (generation) mask
 n+7   ``[sMASK]``           sentence-span mask
=====  ==================  =========================

so the released models' vocabulary is 50265 ids (their embedding has 50304 rows, a multiple of
128). The BPE itself runs through the Hugging Face ``tokenizers`` library, from a ``vocab.json``
+ ``merges.txt`` pair (byte-level pre-tokenisation and decoding, as GPT-2) or a
``tokenizer.json``. Command tokens are never produced from raw text (text containing the string
``[MASK]`` is encoded as ordinary text), and decoding drops them and ``<|endoftext|>``.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Tuple

from .errors import DataError
from .tokenizer_base import TokenizersBackend

ENDOFTEXT = "<|endoftext|>"
COMMAND_TOKENS = ("<|startofpiece|>", "<|endofpiece|>", "[CLS]", "[MASK]", "[SEP]", "[UNK]", "[gMASK]", "[sMASK]")
_ROLES = ("sop_id", "eop_id", "cls_id", "mask_id", "sep_id", "unk_id", "gmask_id", "smask_id")


def bpe_files(path: str) -> Tuple[str, ...]:
    """``(tokenizer.json,)`` or ``(vocab.json, merges.txt)`` for a file or folder ``path``; DataError if neither."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            return (os.path.join(path, "tokenizer.json"),)
        vocab, merges = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    elif path.endswith("tokenizer.json"):
        return (path,)
    elif path.endswith(".json"):
        vocab, merges = path, os.path.join(os.path.dirname(path), "merges.txt")
    else:
        raise DataError(f"{path}: not GLM BPE tokenizer files (give a folder with vocab.json and merges.txt, "
                        "or a tokenizer.json)")
    for file in (vocab, merges):
        if not os.path.isfile(file):
            raise DataError(f"{file}: missing (GLM's BPE needs vocab.json and merges.txt side by side)")
    return vocab, merges


class GLMBPETokenizer(TokenizersBackend):
    """GPT-2 BPE + GLM's command tokens at their real ids (see the module docstring)."""

    dblock_id = None           # GLM-2B/10B were trained without the [dBLOCK] decoder mask

    def __init__(self, path):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        self.model_file = os.fspath(path)
        files = bpe_files(self.model_file)
        try:
            if len(files) == 2:
                with open(files[0], encoding="utf-8") as f:
                    vocab = json.load(f)
                if not isinstance(vocab, dict):
                    raise ValueError("vocab.json is not a JSON object")
                tok = Tokenizer(models.BPE.from_file(*files))
                tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
                tok.decoder = decoders.ByteLevel()
            else:
                loaded = Tokenizer.from_file(files[0])
                # Rebuild without added tokens: command tokens must not be matched in raw text.
                tok = Tokenizer(loaded.model)
                for part in ("normalizer", "pre_tokenizer", "decoder"):
                    if getattr(loaded, part) is not None:
                        setattr(tok, part, getattr(loaded, part))
                vocab = loaded.get_vocab(with_added_tokens=False)
        except (OSError, ValueError, Exception) as e:  # noqa: BLE001 - tokenizers raises plain Exception
            raise DataError(f"{files[0]}: not a BPE vocabulary ({str(e).strip().splitlines()[0]})") from None
        if ENDOFTEXT not in vocab:
            raise DataError(f"{files[0]}: has no {ENDOFTEXT!r} token: not GLM's GPT-2 vocabulary")
        self._tok = tok
        # Command tokens follow the BPE vocabulary; a vocabulary file that already lists them
        # must have them exactly there.
        base = vocab.get(COMMAND_TOKENS[0], len(vocab))
        for offset, token in enumerate(COMMAND_TOKENS):
            if token in vocab and vocab[token] != base + offset:
                raise DataError(f"{files[0]}: {token!r} has id {vocab[token]}, GLM puts it at {base + offset}")
        self.num_text_tokens = base
        self._pieces = {i: t for t, i in vocab.items() if i < base}
        if len(self._pieces) != base:
            raise DataError(f"{files[0]}: ids are not 0..{base - 1} without gaps")
        self._command = {token: base + k for k, token in enumerate(COMMAND_TOKENS)}
        for role, token in zip(_ROLES, COMMAND_TOKENS):
            setattr(self, role, self._command[token])
        self.pad_id = self.eod_id = vocab[ENDOFTEXT]

    @property
    def vocab_size(self) -> int:
        """Real ids: the BPE vocabulary and the command tokens (50265 for GLM-2B/10B)."""
        return self.num_text_tokens + len(COMMAND_TOKENS)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` without command tokens and ``<|endoftext|>``."""
        keep = [int(i) for i in ids if int(i) < self.num_text_tokens and int(i) != self.eod_id]
        return self._tok.decode(keep, skip_special_tokens=False)

    def id_to_token(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id >= self.num_text_tokens:
            if token_id >= self.vocab_size:
                raise self._unknown_id(token_id)
            return COMMAND_TOKENS[token_id - self.num_text_tokens]
        return self._pieces[token_id]

    def token_to_id(self, token: str) -> int:
        if token in self._command:
            return self._command[token]
        token_id = self._tok.token_to_id(token)
        if token_id is None or token_id >= self.num_text_tokens:
            raise self._unknown_token(token)
        return token_id

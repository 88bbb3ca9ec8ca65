"""What the tokenizers share, so that each of them keeps only what differs.

The three tokenizers (SentencePiece :class:`~.tokenizer.GLMTokenizer`, GLM's GPT-2 BPE
:class:`~.glm_bpe.GLMBPETokenizer`, a Hugging Face ``tokenizer.json`` :class:`~.hf_tokenizer.HFTokenizer`)
differ in where their special ids come from and in which ids decoding drops; the padded
vocabulary size, the token list and the bad-id / bad-token errors are the same for all
(:class:`TokenizerBase`), and the two backed by Hugging Face ``tokenizers`` encode the same way
(:class:`TokenizersBackend`): never adding BOS/EOS, so that a sample's special tokens are placed by
the data pipeline alone.
"""
from __future__ import annotations

from typing import List, Sequence

from .errors import DataError


class TokenizerBase:
    """A subclass sets ``model_file`` and defines ``vocab_size`` (real ids) and ``id_to_token``."""

    model_file: str
    # Whether a text's leading whitespace is part of its first token (a byte-level BPE's "Ġword"),
    # so that a document split into sentences must keep the whitespace between them (data/preprocess.py).
    # SentencePiece adds its own word-boundary piece to every text it encodes.
    keeps_leading_whitespace = False

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def id_to_token(self, token_id: int) -> str:
        raise NotImplementedError

    def padded_vocab_size(self, tp_size: int = 1) -> int:
        """Vocabulary size rounded up to a multiple of 128 × ``tp_size`` (embedding rows)."""
        from megatron_glmd.config import pad_vocab_size
        return pad_vocab_size(self.vocab_size, tp_size)

    def tokens(self) -> List[str]:
        """All tokens in id order."""
        return [self.id_to_token(i) for i in range(self.vocab_size)]

    def _unknown_token(self, token: str) -> DataError:
        return DataError(f"token {token!r} is not in the vocabulary of {self.model_file!r}")

    def _unknown_id(self, token_id: int) -> DataError:
        return DataError(f"id {token_id} is outside the vocabulary of {self.vocab_size} ids")


class TokenizersBackend(TokenizerBase):
    """Encoding through a Hugging Face ``tokenizers.Tokenizer`` held as ``self._tok``."""

    keeps_leading_whitespace = True

    def encode(self, text: str) -> List[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

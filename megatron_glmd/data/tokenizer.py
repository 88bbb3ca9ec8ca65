"""Tokenizers: SentencePiece with GLM's special tokens at fixed ids (corpora of your own), GLM's
GPT-2 BPE with its command tokens (the released models, :mod:`.glm_bpe`), a Hugging Face
``tokenizer.json`` as it is (the decoder family, :mod:`.hf_tokenizer`), and the special ids
that the data pipeline takes from whichever is in use (:class:`SpecialIds`, :func:`load_tokenizer`).

Nothing downstream hard-codes a special id: blank infilling, padding and vocabulary ranking all
read them from the tokenizer object.

Every model trained by :func:`train_sentencepiece` (``tools/train_tokenizer.py``) has the
special tokens at these ids, and :class:`GLMTokenizer` refuses a model that does not:

====  ==========  =====================================================
 id   token       role
====  ==========  =====================================================
 0    [PAD]       padding (``pad_id``)
 1    [UNK]       unknown piece (``unk_id``)
 2    [CLS]       classification / start token (``cls_id``)
 3    [SEP]       separator (``sep_id``)
 4    [MASK]      blank-infilling span mask (``mask_id``)
 5    [sMASK]     sentence-span mask (``smask_id``)
 6    [gMASK]     prefix-LM (generation) mask (``gmask_id``)
 7    [sop]       start of a Part-B span (``sop_id``)
 8    [eop]       end of a Part-B span, a target only (``eop_id``)
 9    [dBLOCK]    document-block marker (``dblock_id``)
====  ==========  =====================================================

Ordinary pieces start at id 10. [CLS]..[dBLOCK] are SentencePiece *control* symbols: text that
happens to contain the string ``[MASK]`` never encodes to id 4, and decoding drops them.
Because the special ids are the lowest ids and rank first in the vocabulary-frequency ranking
(sorted by id), a compressed vocabulary keeps them at the same ids.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Union

import sentencepiece as spm

from ..config.sections import TOKENIZER_TYPES
from .errors import DataError
from .tokenizer_base import TokenizerBase

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[sMASK]", "[gMASK]", "[sop]", "[eop]", "[dBLOCK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID, SMASK_ID, GMASK_ID, SOP_ID, EOP_ID, DBLOCK_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)


@dataclass(frozen=True)
class SpecialIds:
    """The special ids a blank-infilling sample uses, read from a tokenizer by :func:`special_ids`."""

    pad: int
    cls: int
    mask: int
    smask: int
    gmask: int
    sop: int
    eop: int
    eod: Optional[int] = None    # end-of-document token (GLM's BPE: <|endoftext|>); None: not marked

    @property
    def mode_tokens(self):
        """The mask token of each corruption mode (MODE_MASK, MODE_SMASK, MODE_GMASK)."""
        return self.mask, self.smask, self.gmask


def special_ids(tokenizer) -> SpecialIds:
    return SpecialIds(pad=tokenizer.pad_id, cls=tokenizer.cls_id, mask=tokenizer.mask_id,
                      smask=tokenizer.smask_id, gmask=tokenizer.gmask_id, sop=tokenizer.sop_id,
                      eop=tokenizer.eop_id, eod=getattr(tokenizer, "eod_id", None))


def load_tokenizer(path: Union[str, os.PathLike], kind: str = "auto"):
    """The tokenizer at ``path`` of type ``kind`` (:data:`TOKENIZER_TYPES`):

    * ``sentencepiece``: a SentencePiece ``.model`` → :class:`GLMTokenizer`;
    * ``glm-bpe``: GLM's BPE files (a folder with ``vocab.json`` + ``merges.txt`` or
      ``tokenizer.json``, or one of those files) → :class:`~.glm_bpe.GLMBPETokenizer`;
    * ``hf``: any Hugging Face ``tokenizer.json`` (or a folder holding one), its ids as they are →
      :class:`~.hf_tokenizer.HFTokenizer` (the decoder family's tokenizers);
    * ``auto``: ``sentencepiece`` for anything but a ``.json`` file or a folder, else ``glm-bpe``
      (a run of the decoder family resolves ``auto`` to ``hf`` instead, distill/data.py).
    """
    path = os.fspath(path)
    if kind not in TOKENIZER_TYPES:
        raise DataError(f"tokenizer type must be one of {', '.join(TOKENIZER_TYPES)}, got {kind!r}")
    if kind == "auto":
        kind = "glm-bpe" if path.endswith(".json") or os.path.isdir(path) else "sentencepiece"
    if kind == "hf":
        from .hf_tokenizer import HFTokenizer
        return HFTokenizer(path)
    if kind == "glm-bpe":
        from .glm_bpe import GLMBPETokenizer
        return GLMBPETokenizer(path)
    return GLMTokenizer(path)


class GLMTokenizer(TokenizerBase):
    """Encode/decode text with a SentencePiece model whose special tokens sit at the fixed ids."""

    pad_id = PAD_ID
    unk_id = UNK_ID
    cls_id = CLS_ID
    sep_id = SEP_ID
    mask_id = MASK_ID
    smask_id = SMASK_ID
    gmask_id = GMASK_ID
    sop_id = SOP_ID
    eop_id = EOP_ID
    dblock_id = DBLOCK_ID
    eod_id = None               # documents are marked by the [CLS] that starts each one

    def __init__(self, model_file: Union[str, os.PathLike]):
        self.model_file = os.fspath(model_file)
        if not os.path.isfile(self.model_file):
            raise DataError(f"tokenizer model {self.model_file!r} does not exist")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(self.model_file)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"tokenizer model {self.model_file!r} is not a SentencePiece model: {exc}") from None
        for token_id, token in enumerate(SPECIAL_TOKENS):
            if token_id >= self._sp.GetPieceSize() or self._sp.IdToPiece(token_id) != token:
                found = self._sp.IdToPiece(token_id) if token_id < self._sp.GetPieceSize() else None
                raise DataError(
                    f"tokenizer model {self.model_file!r} has {found!r} at id {token_id}, expected {token!r}; "
                    "train it with tools/train_tokenizer.py so the GLM special tokens have their fixed ids")

    @property
    def vocab_size(self) -> int:
        """Number of real ids (special tokens included), before any padding."""
        return self._sp.GetPieceSize()

    def encode(self, text: str) -> List[int]:
        return self._sp.EncodeAsIds(text)

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """Encode several strings in one call into SentencePiece (faster than a Python loop)."""
        return self._sp.EncodeAsIds(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.DecodeIds([int(i) for i in ids])

    def id_to_token(self, token_id: int) -> str:
        return self._sp.IdToPiece(int(token_id))

    def token_to_id(self, token: str) -> int:
        """Id of the piece ``token``; raises :class:`DataError` if it is not in the vocabulary."""
        token_id = self._sp.PieceToId(token)
        if token_id == UNK_ID and token != SPECIAL_TOKENS[UNK_ID]:
            raise self._unknown_token(token)
        return token_id


def train_sentencepiece(input_files: Sequence[Union[str, os.PathLike]], vocab_size: int, model_prefix: str,
                        model_type: str = "unigram", character_coverage: float = 0.9995,
                        input_sentence_size: int = 2_000_000, num_threads: int = 1) -> str:
    """Train a SentencePiece model with the GLM special tokens at their fixed ids.

    Writes ``model_prefix.model`` and ``model_prefix.vocab`` (SentencePiece writes them itself;
    they are produced under temporary names and moved into place). Returns the model path.
    """
    files = [os.fspath(f) for f in input_files]
    if not files:
        raise DataError("no input files given")
    for path in files:
        if not os.path.isfile(path):
            raise DataError(f"input file {path!r} does not exist")
        if os.path.getsize(path) == 0:
            raise DataError(f"input file {path!r} is empty")
    if vocab_size <= NUM_SPECIAL_TOKENS:
        raise DataError(f"vocab size {vocab_size} must exceed the {NUM_SPECIAL_TOKENS} special tokens")
    out_dir = os.path.dirname(os.path.abspath(model_prefix))
    if not os.path.isdir(out_dir):
        raise DataError(f"output directory {out_dir!r} does not exist")
    tmp_prefix = f"{model_prefix}.tmp-{os.getpid()}"
    try:
        spm.SentencePieceTrainer.Train(
            input=files,
            model_prefix=tmp_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=num_threads,
            pad_id=PAD_ID, pad_piece=SPECIAL_TOKENS[PAD_ID],
            unk_id=UNK_ID, unk_piece=SPECIAL_TOKENS[UNK_ID],
            bos_id=-1, eos_id=-1,
            control_symbols=list(SPECIAL_TOKENS[CLS_ID:]),
            byte_fallback=False,
            minloglevel=2,
        )
    except RuntimeError as exc:
        for ext in (".model", ".vocab"):
            if os.path.exists(tmp_prefix + ext):
                os.remove(tmp_prefix + ext)
        raise DataError(f"SentencePiece training on {files} failed: {exc}") from None
    for ext in (".vocab", ".model"):
        os.replace(tmp_prefix + ext, model_prefix + ext)
    return model_prefix + ".model"

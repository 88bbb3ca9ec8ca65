"""Real English text for the data tests, read at test time from Python's own documentation
(``pydoc_data.topics``), and a small tokenizer trained on it once per test session."""
from __future__ import annotations

import re

import pydoc_data.topics

from megatron_glmd.data.tokenizer import train_sentencepiece

_INNER_END = re.compile(r"[.!?][\"')\]]*\s")


def paragraphs(min_chars: int = 40):
    """Blank-line-separated paragraphs of Python's documentation, whitespace collapsed."""
    out = []
    for key in sorted(pydoc_data.topics.topics):
        for block in re.split(r"\n\s*\n", pydoc_data.topics.topics[key]):
            text = " ".join(block.split())
            if len(text) >= min_chars:
                out.append(text)
    return out


def simple_sentences():
    """Lines that end with '.' and hold no other sentence end: each is exactly one sentence."""
    out = []
    for key in sorted(pydoc_data.topics.topics):
        for line in pydoc_data.topics.topics[key].splitlines():
            line = line.strip()
            if len(line) > 20 and line.endswith(".") and not _INNER_END.search(line + " ", 0, len(line)) \
                    and line[0].isalpha():
                out.append(line)
    return out


def session_tokenizer(tmp_path_factory, vocab_size: int = 1200) -> str:
    """Path of a SentencePiece model trained on the documentation (trained once per session)."""
    root = tmp_path_factory.getbasetemp() / "glmd_tokenizer"
    model = root / "spm.model"
    if not model.exists():
        root.mkdir(exist_ok=True)
        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(paragraphs()), encoding="utf-8")
        train_sentencepiece([corpus], vocab_size, str(root / "spm"), character_coverage=1.0)
    return str(model)


def train_byte_level_bpe(folder, vocab_size: int, num_paragraphs: int, extra_texts=(),
                         special_tokens=("<|endoftext|>",)):
    """A small GPT-2-style byte-level BPE trained with Hugging Face ``tokenizers`` on the
    documentation (and ``extra_texts``), saved as ``vocab.json`` + ``merges.txt`` and ``tokenizer.json`` in ``folder``;
    returns the ``tokenizers.Tokenizer`` (an independent reference encoder). ``special_tokens`` take
    the first ids (a Llama-3 style file: ``("<|begin_of_text|>", "<|end_of_text|>")``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(paragraphs()[:num_paragraphs] + list(extra_texts), trainer)
    tok.model.save(str(folder))
    tok.save(str(folder / "tokenizer.json"))
    return tok

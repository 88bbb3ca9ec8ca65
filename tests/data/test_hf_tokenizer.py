"""A Hugging Face tokenizer.json as the tokenizer (data/hf_tokenizer.py): ids equal the `tokenizers`
library's own encoding of the same file, special roles come from the file's vocabulary (a
Llama-3 style file has no pad: it pads with its EOD), raw text never yields a special id, and bad
files are refused with a message naming them."""
import json

import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data.glm_bpe import GLMBPETokenizer
from megatron_glmd.data.hf_tokenizer import HFTokenizer
from megatron_glmd.data.tokenizer import load_tokenizer
from tests.data.corpus import paragraphs, train_byte_level_bpe

LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>")
TEXTS = ["Hello world, this is a decoder.", "  leading spaces and\ttabs\n", "naïve café — unicode ✓", ""]


@pytest.fixture(scope="module")
def llama_style(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama3_style")
    return train_byte_level_bpe(folder, 500, 300, special_tokens=LLAMA3_SPECIALS), folder


def test_ids_match_the_libraries_encoding(llama_style):
    reference, folder = llama_style
    for source in (folder, folder / "tokenizer.json"):
        tok = load_tokenizer(source, "hf")
        assert isinstance(tok, HFTokenizer) and tok.vocab_size == reference.get_vocab_size() == 500
        for text in TEXTS + paragraphs()[300:340]:
            assert tok.encode(text) == reference.encode(text, add_special_tokens=False).ids, text
        assert tok.encode_batch(TEXTS) == [reference.encode(t).ids for t in TEXTS]
        assert tok.tokens() == [reference.id_to_token(i) for i in range(500)]
        assert [tok.token_to_id(t) for t in tok.tokens()[:50]] == list(range(50))


def test_llama3_style_roles_and_no_pad(llama_style):
    reference, folder = llama_style
    tok = HFTokenizer(folder)
    assert tok.bos_id == reference.token_to_id("<|begin_of_text|>") == 0
    assert tok.eod_id == reference.token_to_id("<|end_of_text|>") == 1
    assert tok.pad_id == tok.eod_id                       # no pad token: pads with EOD
    assert tok.unk_id is None and tok.mask_id is None and tok.cls_id is None
    # A document that spells out a special token stays one document of ordinary pieces.
    text = "before <|end_of_text|> after <|begin_of_text|>"
    ids = tok.encode(text)
    assert tok.eod_id not in ids and tok.bos_id not in ids
    assert tok.decode(ids) == text
    assert tok.decode([tok.bos_id] + tok.encode("kept text.") + [tok.eod_id]) == "kept text."
    with pytest.raises(DataError, match="not in the vocabulary"):
        tok.token_to_id("no such piece")
    with pytest.raises(DataError, match="outside the vocabulary of 500 ids"):
        tok.id_to_token(500)


def test_mistral_style_roles(tmp_path):
    reference = train_byte_level_bpe(tmp_path, 400, 200, special_tokens=("<unk>", "<s>", "</s>", "<pad>"))
    tok = load_tokenizer(tmp_path / "tokenizer.json", "hf")
    assert (tok.unk_id, tok.bos_id, tok.eod_id, tok.pad_id) == (0, 1, 2, 3)
    for text in paragraphs()[200:220]:
        assert tok.encode(text) == reference.encode(text).ids
    assert reference.encode("a </s> b").ids.count(2) == 1 and 2 not in tok.encode("a </s> b")


def test_auto_keeps_glm_bpe_for_json(llama_style, tmp_path):
    _, folder = llama_style
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    train_byte_level_bpe(gpt2, 400, 200)
    assert isinstance(load_tokenizer(gpt2 / "tokenizer.json"), GLMBPETokenizer)
    assert isinstance(load_tokenizer(gpt2 / "tokenizer.json", "hf"), HFTokenizer)
    with pytest.raises(DataError, match="tokenizer type must be one of auto, sentencepiece, glm-bpe, hf"):
        load_tokenizer(folder, "llama")


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"tokenizer.json: missing"):
        HFTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"a": 0}))
    with pytest.raises(DataError, match=r"tokenizer.json: not a Hugging Face tokenizer.json \("):
        HFTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("not json at all")
    with pytest.raises(DataError, match=r"tokenizer.json: not a Hugging Face tokenizer.json \(") as failure:
        HFTokenizer(tmp_path / "tokenizer.json")
    assert "\n" not in str(failure.value)
    no_eos = tmp_path / "no_eos"
    no_eos.mkdir()
    train_byte_level_bpe(no_eos, 300, 100, special_tokens=("<|begin_of_text|>",))
    with pytest.raises(DataError, match=r"no_eos/tokenizer.json: has no end-of-document token"):
        HFTokenizer(no_eos)


def test_only_a_byte_level_pre_tokenizer_keeps_leading_whitespace(llama_style, tmp_path):
    """Byte-level files (GPT-2, Llama-3/Qwen2's Split + ByteLevel sequence) carry a word's leading space in
    its token, so preprocessing keeps the whitespace before a sentence; a Metaspace (SentencePiece-style)
    file marks word starts itself and gets stripped sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    _, folder = llama_style
    assert HFTokenizer(folder).keeps_leading_whitespace
    vocab = {"<|endoftext|>": 0, "<unk>": 1, "\u2581a": 2}
    for pre, expected in ((pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "isolated"),
                                                    pre_tokenizers.ByteLevel()]), True),
                          (pre_tokenizers.Metaspace(), False), (None, False)):
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        if pre is not None:
            tok.pre_tokenizer = pre
        path = tmp_path / f"{expected}_{pre is None}.json"
        tok.save(str(path))
        assert HFTokenizer(path).keeps_leading_whitespace is expected, pre

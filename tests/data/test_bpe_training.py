"""data/hf_tokenizer.train_byte_level_bpe: the decoder quickstart's tokenizer trainer."""
import pytest

from megatron_glmd.data.errors import DataError
from megatron_glmd.data.hf_tokenizer import HFTokenizer, train_byte_level_bpe
from tests.data.corpus import paragraphs


def test_a_trained_byte_level_bpe_is_a_tokenizer_json_that_encodes_any_text(tmp_path):
    path = tmp_path / "tokenizer.json"
    trained = train_byte_level_bpe(paragraphs()[:200], 400, str(path))
    tok = HFTokenizer(str(path))
    assert tok.vocab_size == 400 and tok.eod_id == 0 and tok.pad_id == 0 and tok.unk_id is None
    # Text the corpus never had (other scripts, emoji, control characters) still encodes, byte by
    # byte, and decodes back exactly; the file encodes as the object the trainer returned.
    for text in ("def f(x): return x ** 2", "Grüße, 東京 🐍\ttab", paragraphs()[500]):
        assert tok.encode(text) == trained.encode(text, add_special_tokens=False).ids
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(paragraphs()[500])) < len(paragraphs()[500].encode())   # merges were learned and used


def test_a_vocabulary_below_the_specials_and_the_bytes_is_refused(tmp_path):
    with pytest.raises(DataError, match="vocab size 257 is below the 258 ids"):
        train_byte_level_bpe(["some text"], 257, str(tmp_path / "tokenizer.json"),
                             special_tokens=("<|begin_of_text|>", "<|end_of_text|>"))
    assert not (tmp_path / "tokenizer.json").exists()

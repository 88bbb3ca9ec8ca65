import pytest
import sentencepiece as spm

from megatron_glmd.data import DataError
from megatron_glmd.data.tokenizer import SPECIAL_TOKENS, GLMTokenizer

from .corpus import paragraphs

EXPECTED_IDS = {"pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3, "mask_id": 4, "smask_id": 5, "gmask_id": 6,
                "sop_id": 7, "eop_id": 8, "dblock_id": 9}


def test_special_tokens_sit_at_their_documented_ids(tokenizer):
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[sMASK]", "[gMASK]", "[sop]", "[eop]", "[dBLOCK]"]
    assert list(SPECIAL_TOKENS) == pieces
    for name, token_id in EXPECTED_IDS.items():
        assert getattr(tokenizer, name) == token_id
    assert [tokenizer.id_to_token(i) for i in range(10)] == pieces
    assert tokenizer.vocab_size == 1200


def test_round_trip_on_real_text(tokenizer):
    texts = paragraphs()[::40]
    assert len(texts) > 20
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids and all(10 <= i < tokenizer.vocab_size for i in ids)
        assert tokenizer.decode(ids) == text


def test_special_token_strings_in_text_are_not_special(tokenizer):
    ids = tokenizer.encode("a [MASK] b [sop] c")
    assert not set(ids) & set(EXPECTED_IDS.values())
    assert tokenizer.decode([tokenizer.cls_id] + tokenizer.encode("hello") + [tokenizer.eop_id]) == "hello"


@pytest.mark.parametrize("tp,expected", [(1, 1280), (2, 1280), (4, 1536), (8, 2048)])
def test_padded_vocab_size(tokenizer, tp, expected):
    assert tokenizer.padded_vocab_size(tp) == expected
    assert expected % (128 * tp) == 0 and expected - 128 * tp < tokenizer.vocab_size <= expected


def test_token_to_id(tokenizer):
    assert tokenizer.token_to_id("[MASK]") == 4
    piece = tokenizer.id_to_token(100)
    assert tokenizer.token_to_id(piece) == 100
    with pytest.raises(DataError, match="not in the vocabulary"):
        tokenizer.token_to_id("no-such-piece-xyz")


def test_model_without_fixed_special_ids_is_refused(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(paragraphs()[:300]), encoding="utf-8")
    spm.SentencePieceTrainer.Train(input=str(corpus), model_prefix=str(tmp_path / "plain"), vocab_size=300,
                                   minloglevel=2)
    with pytest.raises(DataError, match=r"expected '\[PAD\]'.*train_tokenizer"):
        GLMTokenizer(tmp_path / "plain.model")


def test_missing_or_garbage_model(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        GLMTokenizer(tmp_path / "nope.model")
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        GLMTokenizer(tmp_path / "bad.model")

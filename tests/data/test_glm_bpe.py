"""GLM's GPT-2 BPE tokenizer: ids equal an independent encoding of the same BPE files (a tiny
byte-level BPE trained here with `tokenizers`), command tokens sit at GLM's ids after the BPE
vocabulary (50257..50264 for GPT-2's), raw text never yields them, and decoding drops them."""
import json

import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data.glm_bpe import COMMAND_TOKENS, GLMBPETokenizer
from megatron_glmd.data.tokenizer import GLMTokenizer, load_tokenizer, special_ids
from tests.data.corpus import paragraphs, train_byte_level_bpe

TEXTS = ["Hello world, this is GLM.", "  leading spaces and\ttabs\n", "naïve café — unicode ✓",
         "text with [MASK] and <|startofpiece|> written out", ""]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    return train_byte_level_bpe(folder, 600, 400), folder


def test_ids_match_an_independent_encoding(trained):
    reference, folder = trained
    for source in (folder / "vocab.json", folder / "tokenizer.json"):
        tok = load_tokenizer(source)
        assert isinstance(tok, GLMBPETokenizer)
        for text in TEXTS + paragraphs()[400:450]:
            assert tok.encode(text) == reference.encode(text).ids, (source, text)
        assert tok.encode_batch(TEXTS) == [reference.encode(t).ids for t in TEXTS]


def test_command_tokens_follow_the_bpe_vocabulary(trained):
    reference, folder = trained
    tok = GLMBPETokenizer(folder / "vocab.json")
    n = reference.get_vocab_size()
    assert tok.vocab_size == n + 8 and tok.num_text_tokens == n
    ids = [tok.sop_id, tok.eop_id, tok.cls_id, tok.mask_id, tok.sep_id, tok.unk_id, tok.gmask_id, tok.smask_id]
    assert ids == list(range(n, n + 8))
    assert [tok.id_to_token(i) for i in ids] == list(COMMAND_TOKENS)
    assert [tok.token_to_id(t) for t in COMMAND_TOKENS] == ids
    assert tok.pad_id == tok.eod_id == reference.token_to_id("<|endoftext|>")
    assert special_ids(tok).mode_tokens == (tok.mask_id, tok.smask_id, tok.gmask_id)
    assert len(tok.tokens()) == tok.vocab_size
    # Raw text never produces a command token; decoding drops them and <|endoftext|>.
    encoded = tok.encode("a [MASK] b <|endofpiece|> [CLS]")
    assert not set(encoded) & set(ids)
    text = "Decoding keeps the text."
    assert tok.decode([tok.cls_id] + tok.encode(text) + [tok.eop_id, tok.eod_id, tok.mask_id]) == text


def test_gpt2_sized_vocabulary_gives_glm_ids(tmp_path):
    """A vocabulary of GPT-2's size (50257 ids, <|endoftext|> last) puts GLM's command tokens at
    50257..50264: the real vocabulary of GLM-2B/10B is 50265 ids (50304 embedding rows)."""
    from tokenizers import pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({f"tok{i}": i for i in range(len(alphabet), 50256)})
    vocab["<|endoftext|>"] = 50256
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = GLMBPETokenizer(tmp_path)
    assert (tok.sop_id, tok.eop_id, tok.cls_id, tok.mask_id, tok.sep_id, tok.unk_id, tok.gmask_id,
            tok.smask_id) == tuple(range(50257, 50265))
    assert tok.pad_id == 50256 and tok.vocab_size == 50265 and tok.padded_vocab_size(1) == 50304
    from megatron_glmd.config import preset
    assert preset("glm-10b").vocab_size == preset("glm-2b").vocab_size == tok.vocab_size


def test_bad_files(tmp_path, trained, tokenizer_model):
    _, folder = trained
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    with pytest.raises(DataError, match="merges.txt: missing"):
        GLMBPETokenizer(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(DataError, match="has no '<\\|endoftext\\|>' token"):
        GLMBPETokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="vocab.json: not a BPE vocabulary"):
        GLMBPETokenizer(tmp_path / "vocab.json")
    assert isinstance(load_tokenizer(tokenizer_model), GLMTokenizer)
    assert isinstance(load_tokenizer(folder), GLMBPETokenizer)

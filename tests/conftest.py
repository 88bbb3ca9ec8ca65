"""Fixtures shared across test packages."""
import pytest

from megatron_glmd.data.tokenizer import GLMTokenizer

from tests.data.corpus import session_tokenizer


@pytest.fixture(scope="session")
def tokenizer_model(tmp_path_factory):
    """A SentencePiece model trained once per session on Python's documentation."""
    return session_tokenizer(tmp_path_factory)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_model):
    return GLMTokenizer(tokenizer_model)

"""Fixtures of the command-line tests."""
import pytest

from megatron_glmd.data.preprocess import preprocess
from tests.data.corpus import paragraphs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, tokenizer_model):
    folder = tmp_path_factory.mktemp("train_cli")
    texts = paragraphs()
    for split, part in (("train", texts[:600]), ("valid", texts[600:700])):
        (folder / f"{split}.txt").write_text("\n\n".join(part), encoding="utf-8")
        preprocess([str(folder / f"{split}.txt")], str(folder / split), tokenizer_model, progress=False)
    return folder

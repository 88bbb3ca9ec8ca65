import pytest


@pytest.fixture(scope="session")
def real_dataset(tmp_path_factory, tokenizer_model):
    """The documentation paragraphs, preprocessed (sentence-split) into an indexed dataset."""
    from megatron_glmd.data.indexed_dataset import IndexedDataset
    from megatron_glmd.data.preprocess import preprocess

    from .corpus import paragraphs
    root = tmp_path_factory.mktemp("real_dataset")
    path = root / "docs.txt"
    texts = paragraphs()
    # Join paragraphs into longer documents of varying size.
    docs = [" ".join(texts[i:i + 1 + i % 5]) for i in range(0, len(texts), 3)]
    path.write_text("\n\n".join(docs), encoding="utf-8")
    preprocess([path], str(root / "docs"), tokenizer_model, progress=False)
    return IndexedDataset(str(root / "docs"))

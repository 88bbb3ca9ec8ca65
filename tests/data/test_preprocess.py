import json
import os

import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data.indexed_dataset import IndexedDataset
from megatron_glmd.data.preprocess import preprocess, split_sentences

from .corpus import paragraphs, simple_sentences, train_byte_level_bpe


def known_documents(count=60, per_doc=3):
    """Documents built from sentences known to be single sentences: the expected split is exact."""
    sentences = simple_sentences()
    return [sentences[i * per_doc:(i + 1) * per_doc] for i in range(count)]


def test_split_sentences_hand_cases():
    assert split_sentences('One. "Two!" Three? (Four.)  Five') == ["One.", '"Two!"', "Three?", "(Four.)", "Five"]
    assert split_sentences("version 3.11 is here.\nNext line") == ["version 3.11 is here.", "Next line"]
    assert split_sentences("   ") == []
    # keep_whitespace (byte-level BPEs): each sentence keeps the whitespace before it, and they join back
    assert split_sentences('One. "Two!" Three?\n  (Four.)  Five ', keep_whitespace=True) == [
        "One.", ' "Two!"', " Three?", "\n  (Four.)", "  Five"]
    assert split_sentences("  ", keep_whitespace=True) == [] and split_sentences(" x ", True) == ["x"]


def test_plain_text_read_back_equals_direct_tokenisation(tmp_path, tokenizer, tokenizer_model):
    docs = known_documents()
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(" ".join(d) for d in docs) + "\n", encoding="utf-8")
    stats = preprocess([path], str(tmp_path / "out"), tokenizer_model, progress=False)
    ds = IndexedDataset(str(tmp_path / "out"))
    assert stats.documents == ds.num_documents == len(docs)
    assert stats.tokens == ds.num_tokens
    for d, doc in enumerate(docs):
        expected = [tokenizer.encode(s) for s in doc]
        assert [s.tolist() for s in ds.sentences(d)] == expected


def test_jsonl_multi_process_equals_single_process(tmp_path, tokenizer_model):
    texts = paragraphs()[:400]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    preprocess([path], str(tmp_path / "one"), tokenizer_model, json_key="body", workers=1, progress=False)
    preprocess([path], str(tmp_path / "two"), tokenizer_model, json_key="body", workers=2, progress=False)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"one{ext}").read_bytes() == (tmp_path / f"two{ext}").read_bytes()
    assert IndexedDataset(str(tmp_path / "one")).num_documents == len(texts)


def test_no_sentence_split_equals_encoding_whole_documents(tmp_path, tokenizer, tokenizer_model):
    texts = paragraphs()[:50]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    preprocess([path], str(tmp_path / "o"), tokenizer_model, split_into_sentences=False, progress=False)
    ds = IndexedDataset(str(tmp_path / "o"))
    assert ds.num_sentences == ds.num_documents == 50
    for d, text in enumerate(texts):
        assert ds.document(d).tolist() == tokenizer.encode(text)


def test_byte_level_bpe_documents_round_trip_exactly(tmp_path):
    """Type hf keeps documents whole by default, so each stored document decodes (by the library's
    own tokenizer, an independent decoder) to exactly its input text, spaces between sentences, line
    breaks, indentation and non-ASCII included. Split into sentences (GLM's blank infilling needs
    them), a byte-level BPE's sentences keep the whitespace before them: the same tokens as the
    whole document's, and the same exact round trip."""
    (tmp_path / "tok").mkdir()
    reference = train_byte_level_bpe(tmp_path / "tok", 400, 200)
    tok_json = str(tmp_path / "tok" / "tokenizer.json")
    docs = paragraphs()[200:240] + ['Two lines. Of text!\n  Indented, then "quoted." End', "naïve café. ✓ done?  Yes."]
    (tmp_path / "c.txt").write_text("\n\n".join(docs), encoding="utf-8")
    with_blank_line = docs + ["A JSON document.\n\nIts second paragraph."]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in with_blank_line),
                                      encoding="utf-8")
    for source, texts in (("c.txt", docs), ("c.jsonl", with_blank_line)):
        stats = preprocess([tmp_path / source], str(tmp_path / source), tok_json, tokenizer_type="hf", progress=False)
        ds = IndexedDataset(str(tmp_path / source))
        assert stats.sentences == ds.num_sentences == ds.num_documents == len(texts)
        assert [reference.decode(ds.document(d).tolist()) for d in range(len(texts))] == texts

    preprocess([tmp_path / "c.txt"], str(tmp_path / "split"), tok_json, tokenizer_type="hf",
               split_into_sentences=True, progress=False)
    ds = IndexedDataset(str(tmp_path / "split"))
    assert ds.num_sentences >= len(docs) + 10                       # documents really were split
    assert [reference.decode(ds.document(d).tolist()) for d in range(len(docs))] == docs
    assert [ds.document(d).tolist() for d in range(len(docs))] == [
        reference.encode(t, add_special_tokens=False).ids for t in docs]
    # GLM's GPT-2 BPE (vocab.json + merges.txt) splits by default, for [sMASK]: the same exact round trip
    stats = preprocess([tmp_path / "c.txt"], str(tmp_path / "glm"), str(tmp_path / "tok" / "vocab.json"),
                       tokenizer_type="glm-bpe", progress=False)
    ds = IndexedDataset(str(tmp_path / "glm"))
    assert stats.sentences == ds.num_sentences >= len(docs) + 10
    assert [reference.decode(ds.document(d).tolist()) for d in range(len(docs))] == docs


def test_multiple_files_keep_order(tmp_path, tokenizer, tokenizer_model):
    docs = known_documents(10, 1)
    (tmp_path / "a.txt").write_text("\n\n".join(d[0] for d in docs[:4]), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": d[0]}) + "\n" for d in docs[4:]), encoding="utf-8")
    preprocess([tmp_path / "a.txt", tmp_path / "b.jsonl"], str(tmp_path / "o"), tokenizer_model, progress=False)
    ds = IndexedDataset(str(tmp_path / "o"))
    assert [ds.document(i).tolist() for i in range(10)] == [tokenizer.encode(d[0]) for d in docs]


@pytest.mark.parametrize("name,content,message", [
    ("bad.jsonl", '{"text": "fine"}\n{"text": oops}\n', r"bad\.jsonl:2: invalid JSON"),
    ("key.jsonl", '{"text": "fine"}\n\n{"body": "x", "id": 3}\n', r"key\.jsonl:3: key 'text' missing \(keys present: 'body', 'id'\)"),
    ("type.jsonl", '{"text": 5}\n', r"type\.jsonl:1: key 'text' holds int"),
    ("list.jsonl", '["text"]\n', r"list\.jsonl:1: expected a JSON object"),
    ("empty.txt", "\n  \n\n", r"empty\.txt: no documents found"),
    ("utf.txt", b"fine\n\xff\xfe broken\n", r"utf\.txt:2: not valid UTF-8"),
])
def test_bad_input_errors_name_file_and_line(tmp_path, tokenizer_model, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message):
        preprocess([path], str(tmp_path / "out"), tokenizer_model, progress=False)
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing written, no temporary left behind


def test_error_in_a_worker_run_keeps_previous_output(tmp_path, tokenizer_model):
    good = tmp_path / "good.txt"
    good.write_text("\n\n".join(paragraphs()[:2000]), encoding="utf-8")
    preprocess([good], str(tmp_path / "out"), tokenizer_model, progress=False)
    before = (tmp_path / "out.bin").read_bytes(), (tmp_path / "out.idx").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n' * 3 + "{broken\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:4: invalid JSON"):
        preprocess([good, bad], str(tmp_path / "out"), tokenizer_model, workers=2, progress=False)
    assert ((tmp_path / "out.bin").read_bytes(), (tmp_path / "out.idx").read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "good.txt", "out.bin", "out.idx"]


def test_missing_file_and_bad_arguments(tmp_path, tokenizer_model):
    with pytest.raises(DataError, match=r"input file '.*missing\.txt' does not exist"):
        preprocess([tmp_path / "missing.txt"], str(tmp_path / "o"), tokenizer_model, progress=False)
    (tmp_path / "a.txt").write_text("hello.", encoding="utf-8")
    with pytest.raises(DataError, match="output directory"):
        preprocess([tmp_path / "a.txt"], str(tmp_path / "no" / "o"), tokenizer_model, progress=False)
    with pytest.raises(DataError, match="workers must be at least 1"):
        preprocess([tmp_path / "a.txt"], str(tmp_path / "o"), tokenizer_model, workers=0, progress=False)
    with pytest.raises(DataError, match="tokenizer model"):
        preprocess([tmp_path / "a.txt"], str(tmp_path / "o"), tmp_path / "none.model", progress=False)

"""With GLM's BPE tokenizer every special id of a task sample is that tokenizer's: [CLS], [MASK], [sop],
[eop] after the BPE vocabulary, ``<|endoftext|>`` closing Part A and padding (GLM's 'eos')."""
import pytest

from megatron_glmd.data.glm_bpe import GLMBPETokenizer
from megatron_glmd.tasks import encode_example, read_superglue, superglue_task, verbalizer_token_ids
from tests.data.corpus import train_byte_level_bpe

from .helpers import write_jsonl


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    train_byte_level_bpe(folder, 500, 300)
    return GLMBPETokenizer(folder / "vocab.json")


def test_single_token_sample_uses_the_bpe_ids(tmp_path, bpe):
    assert bpe.sop_id > bpe.eod_id and bpe.pad_id == bpe.eod_id
    path = write_jsonl(tmp_path / "v.jsonl", [{"question": "is it a list", "passage": "The list.", "label": True}])
    task = superglue_task("boolq", verbalizer=["the", "a"])
    ids = verbalizer_token_ids(task, bpe)
    assert ids == [bpe.encode(" the")[0], bpe.encode(" a")[0]] != [bpe.encode("the")[0], bpe.encode("a")[0]]
    s = encode_example(task, read_superglue("boolq", path)[0], bpe, 48)
    sep, m = s["sep"], s["mask_position"]
    assert s["input_ids"][0] == bpe.cls_id and s["input_ids"][m] == bpe.mask_id
    assert s["input_ids"][sep - 1] == bpe.eod_id and s["input_ids"][sep] == bpe.sop_id
    assert bpe.decode(s["input_ids"][1:m]) == "Based on the following passage is it a list?"
    assert bpe.decode(s["input_ids"][m + 1:sep]) == ". The list."
    assert s["target_ids"][sep] == ids[1] and (s["input_ids"][sep + 1:] == bpe.pad_id).all()


def test_candidate_samples_use_the_bpe_ids(tmp_path, bpe):
    path = write_jsonl(tmp_path / "c.jsonl", [{"premise": "The file was closed.", "choice1": "It was read.",
                                               "choice2": "The loop ended.", "question": "cause", "label": 0}])
    s = encode_example(superglue_task("copa"), read_superglue("copa", path)[0], bpe, 64)
    for k, text in enumerate((" it was read", " the loop ended")):
        sep, length = s["sep"][k], s["length"][k]
        cand = bpe.encode(text)
        assert s["input_ids"][k][sep - 1] == bpe.eod_id
        assert s["input_ids"][k][sep:length].tolist() == [bpe.sop_id, *cand]
        assert s["target_ids"][k][sep:length].tolist() == [*cand, bpe.eop_id]
        assert (s["input_ids"][k][length:] == bpe.pad_id).all()

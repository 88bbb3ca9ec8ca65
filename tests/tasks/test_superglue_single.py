"""BoolQ, CB, RTE, WiC and MultiRC on hand-written SuperGLUE lines: GLM's pattern text, the [MASK]
position, the verbalizer ids, labels, and one-line errors naming file, line and field."""
import pytest

from megatron_glmd.data.errors import DataError
from megatron_glmd.tasks import encode_example, read_superglue, superglue_task, verbalizer_token_ids

from .helpers import check_single_layout, write_jsonl

S = 96


def _ids(tok, words):
    return [tok.encode(" " + w)[0] for w in words]


def test_boolq(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "val.jsonl", [
        {"question": "is a list mutable", "passage": "Lists are mutable sequences.", "idx": 0, "label": True},
        {"question": "is a tuple mutable", "passage": "Tuples are not.", "idx": 1, "label": False},
        {"question": "is it", "passage": "No label here.", "idx": 2}])
    examples = read_superglue("boolq", path)
    assert [(e.label, e.target) for e in examples] == [(1, 1), (0, 0), (-1, -1)]
    assert examples[0].guid == f"{path}:1"
    task = superglue_task("boolq", verbalizer={"false": "false", "true": "true"})
    ids = verbalizer_token_ids(task, tokenizer)
    assert ids == _ids(tokenizer, ["false", "true"])
    sample = encode_example(task, examples[0], tokenizer, S)
    check_single_layout(sample, tokenizer, "Based on the following passage is a list mutable?",
                        ". Lists are mutable sequences.", ids[1])
    assert sample["label"] == 1
    unlabelled = encode_example(task, examples[2], tokenizer, S)
    assert unlabelled["label"] == -1 and unlabelled["target_ids"][unlabelled["sep"]] == tokenizer.pad_id


def test_glm_verbalizer_words_are_kept(tokenizer):
    assert superglue_task("boolq").verbalizer == ("No", "Yes")
    assert superglue_task("cb").verbalizer == ("Yes", "No", "Maybe")
    assert superglue_task("boolq").answer_prefix == " "       # GLM's " Yes" / " No"


@pytest.mark.parametrize("name", ["cb", "rte"])
def test_entailment_tasks(tmp_path, tokenizer, name):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"premise": "The parser reads the \u201cfile\u201d.", "hypothesis": "The file is read.", "idx": 0,
         "label": "entailment"}])
    (example,) = read_superglue(name, path)
    assert example.fields == {"premise": 'The parser reads the "file".', "hypothesis": "The file is read"}
    words = ["true", "false", "no"][:len(superglue_task(name).labels)]
    task = superglue_task(name, verbalizer=words)
    ids = verbalizer_token_ids(task, tokenizer)
    sample = encode_example(task, example, tokenizer, S)
    if name == "cb":
        check_single_layout(sample, tokenizer, "The file is read?", '. The parser reads the "file".', ids[0])
    else:
        check_single_layout(sample, tokenizer, '"The file is read" ?', ', "The parser reads the "file"."', ids[0])


def test_wic(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "val.jsonl", [
        {"word": "key", "sentence1": "The key opens the lock.", "sentence2": "Each key of a dict is hashable.",
         "idx": 0, "label": False, "start1": 4, "end1": 7}])
    (example,) = read_superglue("wic", path)
    task = superglue_task("wic", verbalizer=["no", "so"])
    ids = verbalizer_token_ids(task, tokenizer)
    check_single_layout(encode_example(task, example, tokenizer, S), tokenizer,
                        "The key opens the lock. Each key of a dict is hashable. Does key have the same meaning in "
                        "both sentences?", "", ids[0])


def test_multirc_options_and_questions(tmp_path, tokenizer):
    line = {"idx": 0, "passage": {"text": "Python has lists. Lists are mutable.  ", "questions": [
        {"question": "What are lists?", "idx": 0, "answers": [{"text": "mutable", "idx": 0, "label": 1},
                                                             {"text": "immutable", "idx": 1, "label": 0}]},
        {"question": "What has lists", "idx": 1, "answers": [{"text": "Python", "idx": 2, "label": 1}]}]}}
    path = write_jsonl(tmp_path / "val.jsonl", [line])
    examples = read_superglue("multirc", path)
    assert [e.label for e in examples] == [1, 0, 1]
    assert examples[0].group == examples[1].group != examples[2].group
    assert examples[1].guid == f"{path}:1#passage.questions[0].answers[1]"
    task = superglue_task("multirc", verbalizer=["false", "true"])
    ids = verbalizer_token_ids(task, tokenizer)
    check_single_layout(encode_example(task, examples[0], tokenizer, S), tokenizer,
                        "Python has lists. Lists are mutable. Question: What are lists? Is it mutable?", ".", ids[1])


def test_long_passage_is_cut_from_its_end(tmp_path, tokenizer):
    passage = " ".join(["The list holds a value."] * 60)
    path = write_jsonl(tmp_path / "val.jsonl", [{"question": "is it", "passage": passage, "idx": 0, "label": True}])
    task = superglue_task("boolq", verbalizer=["false", "true"])
    sample = encode_example(task, read_superglue("boolq", path)[0], tokenizer, 40)
    assert sample["length"] <= 40
    assert tokenizer.decode(sample["input_ids"][:sample["sep"]]).startswith(
        "Based on the following passage is it? . The list holds a value. The list")


@pytest.mark.parametrize("name, record, message", [
    ("boolq", {"passage": "p", "idx": 0, "label": True}, "field 'question': missing"),
    ("cb", {"premise": "p", "hypothesis": "h", "label": "maybe"},
     "field 'label': label 'maybe' is not one of 'entailment', 'contradiction', 'neutral'"),
    ("wic", {"word": 3, "sentence1": "a", "sentence2": "b", "label": True}, "field 'word': expected text, got 3"),
    ("multirc", {"passage": {"text": "t", "questions": [{"question": "q", "idx": 0, "answers": [{"label": 1}]}]}},
     "field 'passage.questions[0].answers[0].text': missing"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, name, record, message):
    first = '{"question": "q", "passage": "p", "idx": 0, "label": true}' if name == "boolq" else ""
    path = write_jsonl(tmp_path / "bad.jsonl", [first, record])
    with pytest.raises(DataError) as err:
        read_superglue(name, path)
    assert str(err.value) == f"{path}:2: {message}"
    with pytest.raises(DataError, match=r":1: not a JSON object"):
        read_superglue(name, write_jsonl(tmp_path / "broken.jsonl", ["{oops"]))


def test_several_token_word_is_refused(tokenizer):
    task = superglue_task("rte", verbalizer=["true", "Zyxwq"])
    with pytest.raises(DataError) as err:
        verbalizer_token_ids(task, tokenizer)
    assert str(err.value).startswith("task rte: verbalizer.not_entailment: the word 'Zyxwq' is ")
    assert "\n" not in str(err.value)

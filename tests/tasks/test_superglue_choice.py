"""COPA, WSC and ReCoRD on hand-written SuperGLUE lines: GLM's pattern text, the candidates and their
blank-infilling samples ([sop] + candidate, targets candidate + [eop], 2-D positions), labels, errors."""
import numpy as np
import pytest

from megatron_glmd.data.errors import DataError
from megatron_glmd.tasks import encode_example, read_superglue, superglue_task

from .helpers import check_candidate_layout, write_jsonl

S = 96


def test_copa_cause_and_effect(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"premise": "The file was closed.", "choice1": "The program wrote to it.", "choice2": "The loop ended!",
         "question": "cause", "idx": 0, "label": 1},
        {"premise": "The test failed.", "choice1": "We fixed the bug.", "choice2": "It passed.",
         "question": "effect", "idx": 1, "label": 0}])
    task = superglue_task("copa")
    cause, effect = read_superglue("copa", path)
    assert cause.candidates == ("the program wrote to it", "the loop ended") and cause.label == cause.target == 1
    sample = encode_example(task, cause, tokenizer, S)
    left = '"the program wrote to it" or "the loop ended"? The file was closed because'
    for k, text in enumerate(cause.candidates):
        check_candidate_layout(sample, k, tokenizer, left, ".", tokenizer.encode(" " + text))
    assert sample["label"] == 1
    check_candidate_layout(encode_example(task, effect, tokenizer, S), 0, tokenizer,
                           '"we fixed the bug" or "it passed"? The test failed, so', ".",
                           tokenizer.encode(" we fixed the bug"))
    mirrored = read_superglue("copa", path, train=True)
    assert len(mirrored) == 4 and mirrored[2].candidates == cause.candidates[::-1] and mirrored[2].label == 0
    assert mirrored[2].guid.endswith(":1#mirror")


def test_wsc_marks_the_pronoun_and_lists_candidates(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "val.jsonl", [
        {"text": "Mark told Pete many lies about himself, which Pete included in his book.",
         "target": {"span1_index": 0, "span1_text": "Mark", "span2_index": 12, "span2_text": "his"},
         "idx": 0, "label": True, "candidates": [{"text": "Pete"}, {"text": "Mark"}, {"text": "the book"}]},
        {"text": "The cup fell on the plate and it broke.",
         "target": {"span1_index": 1, "span1_text": "The cup", "span2_index": 6, "span2_text": "it"},
         "idx": 1, "label": False}])
    referent, other = read_superglue("wsc", path)
    assert referent.candidates == ("Mark", "Pete", "the book")        # duplicates of span 1 dropped
    assert (referent.label, referent.target, other.label, other.target) == (1, 0, 0, -1)
    text = "Mark told Pete many lies about himself, which Pete included in *his* book."  # index 12 -> 11
    assert referent.fields == {"text": text, "pronoun": "his"}
    task = superglue_task("wsc")
    sample = encode_example(task, referent, tokenizer, S)
    left = text + " Question: In the passage above, what does the pronoun '*his*' refer to? Answer:"
    for k, cand in enumerate(referent.candidates):
        check_candidate_layout(sample, k, tokenizer, left, ".", tokenizer.encode(" " + cand))
    assert other.candidates == ("The cup",) and "*it*" in other.fields["text"]


def _record_line():
    passage = "Guido wrote Python.\n@highlight\nPython is a language"
    entities = [(0, 4), (12, 17), (31, 36), (0, 4)]              # Guido, Python, Python, Guido
    return {"idx": 0, "passage": {"text": passage, "entities": [{"start": s, "end": e} for s, e in entities]},
            "qas": [{"query": "@placeholder designed the language.", "idx": 5,
                     "answers": [{"start": 0, "end": 4, "text": "Guido"}]},
                    {"query": "It is called @placeholder today.", "idx": 6, "answers": []}]}


def test_record_evaluation_and_training_examples(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "val.jsonl", [_record_line()])
    first, second = read_superglue("record", path)
    assert first.candidates == ("Guido", "Python") and first.answers == ("Guido",) and first.label == 0
    assert second.label == -1 and second.answers == ()
    assert first.fields == {"passage": "Guido wrote Python.\n- Python is a language", "query_left": "",
                            "query_right": " designed the language."}
    sample = encode_example(superglue_task("record"), second, tokenizer, S)
    for k, cand in enumerate(second.candidates):
        check_candidate_layout(sample, k, tokenizer, "Guido wrote Python.\n- Python is a language It is called",
                               " today.", tokenizer.encode(" " + cand))
    train = read_superglue("record", path, train=True)
    assert [(e.candidates, e.target) for e in train] == [(("Guido", "Python"), 0)]


def test_record_training_draws_at_most_max_candidates(tmp_path):
    text = " ".join(f"E{i}" for i in range(20))
    line = {"idx": 0, "passage": {"text": text, "entities": [{"start": 3 * i, "end": 3 * i + 1} for i in range(10)]},
            "qas": [{"query": "Q @placeholder.", "idx": 0, "answers": [{"text": "E3"}, {"text": "E7"}]}]}
    from megatron_glmd.tasks.superglue_choice import read_record
    path = write_jsonl(tmp_path / "train.jsonl", [line])
    drawn = read_record(path, train=True, max_candidates=4)
    assert [e.candidates[0] for e in drawn] == ["E3", "E7"]
    for e in drawn:
        assert len(e.candidates) == 4 and not {"E3", "E7"} & set(e.candidates[1:])
    assert drawn == read_record(path, train=True, max_candidates=4)              # seeded
    assert read_record(path, train=True, max_candidates=4, seed=1) != drawn


def test_candidates_share_one_part_a_when_the_passage_is_cut(tmp_path, tokenizer):
    line = _record_line()
    line["passage"]["text"] += ". " + " ".join(["The module defines a class."] * 40)
    sample = encode_example(superglue_task("record"), read_superglue("record",
                            write_jsonl(tmp_path / "v.jsonl", [line]))[0], tokenizer, 48)
    assert (sample["length"] <= 48).all() and sample["sep"][0] == sample["sep"][1]
    sep = sample["sep"][0]
    assert np.array_equal(sample["input_ids"][0][:sep], sample["input_ids"][1][:sep])


@pytest.mark.parametrize("name, record, message", [
    ("copa", {"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0},
     "field 'question': expected 'cause' or 'effect', got 'why'"),
    ("copa", {"premise": "p", "choice1": "a", "question": "cause"}, "field 'choice2': missing"),
    ("wsc", {"text": "a b c", "target": {"span1_text": "a", "span2_text": "z", "span2_index": 1}},
     "field 'target.span2_index': word 1 is 'b', not the pronoun 'z'"),
    ("record", {"passage": {"text": "abc", "entities": []}, "qas": [{"query": "no placeholder", "idx": 0}]},
     "field 'qas[0].query': needs exactly one @placeholder"),
    ("record", {"passage": {"text": "abc", "entities": [{"start": 0}]}, "qas": []},
     "field 'passage.entities[0].end': missing"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, name, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", ["", record])
    with pytest.raises(DataError) as err:
        read_superglue(name, path)
    assert str(err.value) == f"{path}:2: {message}"


def test_candidate_batch_pads_choices_and_flattens(tmp_path, tokenizer):
    from megatron_glmd.tasks import ClozeDataset
    path = write_jsonl(tmp_path / "val.jsonl", [_record_line()])
    dataset = ClozeDataset(superglue_task("record"), read_superglue("record", path), tokenizer, 64)
    assert dataset.max_candidates == 2
    batch = dataset.collate([dataset[0], dataset[1]], num_choices=3)
    assert batch["input_ids"].shape == (6, 64) and batch["position_ids"].shape == (6, 2, 64)
    assert batch["choice_mask"].tolist() == [[1, 1, 0], [1, 1, 0]] and batch["label"].tolist() == [0, -1]
    assert batch["input_ids"][2].equal(batch["input_ids"][0])             # padding repeats candidate 0
    with pytest.raises(DataError, match="2 candidates, the batch takes 1"):
        dataset.collate([dataset[0]], num_choices=1)

"""Cloze examples as a decoder's causal samples (tasks/encode_causal.py): the answer is read after the
whole pattern. Layouts checked by hand against the tokenizer's own encoding of the rendered text, and
the task logits of a padded batch through a random decoder equal to plain prompts run alone."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from megatron_glmd.config import run_config_from_dict
from megatron_glmd.data.errors import DataError
from megatron_glmd.data.hf_tokenizer import HFTokenizer, train_byte_level_bpe
from megatron_glmd.model.build import build_stage
from megatron_glmd.tasks import (ClozeDataset, candidate_log_probs, encode_example, make_task, read_superglue,
                                 superglue_task, verbalizer_logits, verbalizer_token_ids)
from tests.data.corpus import paragraphs
from tests.distill.decoder_cases import STUDENT

from .helpers import write_jsonl

BOOLQ = {"question": "is it a list", "passage": "The list is sorted.", "label": True}
COPA = {"premise": "The file was closed.", "choice1": "It was read.", "choice2": "The loop ended.",
        "question": "cause", "label": 0}


@pytest.fixture(scope="module", params=["no_bos", "bos"])
def tok(request, tmp_path_factory):
    """A byte-level BPE without a BOS token (GPT-2, Qwen2 style) and one with (Llama-3 style)."""
    path = tmp_path_factory.mktemp(request.param) / "tokenizer.json"
    specials = ("<|endoftext|>",) if request.param == "no_bos" else ("<|begin_of_text|>", "<|end_of_text|>")
    train_byte_level_bpe(paragraphs(), 1000, str(path), special_tokens=specials)
    return HFTokenizer(path)


def _boolq(tmp_path):
    return superglue_task("boolq", verbalizer=["module", "list"]), \
        read_superglue("boolq", write_jsonl(tmp_path / "b.jsonl", [BOOLQ]))[0]


def _copa(tmp_path):
    return superglue_task("copa"), read_superglue("copa", write_jsonl(tmp_path / "c.jsonl", [COPA]))[0]


def _bos(tok):
    return [] if tok.bos_id is None else [tok.bos_id]


def test_single_token_sample_is_the_pattern_then_the_answer(tmp_path, tok):
    task, example = _boolq(tmp_path)
    s = encode_example(task, example, tok, 48, causal=True)
    # GLM's BoolQ pattern "Based on the following passage {question}? [MASK]. {passage}": the text on
    # both sides of the [MASK], encoded as two strings; the space before [MASK] goes to the answer.
    context = _bos(tok) + tok.encode("Based on the following passage is it a list?") + tok.encode(". The list is sorted.")
    n, sep = len(context), s["sep"]
    assert s["input_ids"][:n].tolist() == context and (s["input_ids"][n:] == tok.pad_id).all()
    assert sep == n - 1 and s["length"] == n and s["mask_position"] == sep
    answer = tok.encode(" list")
    assert len(answer) == 1 and s["target_ids"][sep] == answer[0] == verbalizer_token_ids(task, tok)[1]
    assert s["target_ids"][:sep].tolist() == context[1:]                 # next-token targets of the context
    assert s["loss_mask"].tolist() == [1.0 if i == sep else 0.0 for i in range(48)]
    assert s["position_ids"].tolist() == list(range(n)) + [0] * (48 - n)


def test_an_example_without_target_has_a_pad_target(tmp_path, tok):
    task, example = _boolq(tmp_path)
    unlabelled = read_superglue("boolq", write_jsonl(tmp_path / "u.jsonl", [{k: v for k, v in BOOLQ.items()
                                                                             if k != "label"}]))[0]
    assert unlabelled.target == -1 and example.target == 1
    s = encode_example(task, unlabelled, tok, 48, causal=True)
    assert s["target_ids"][s["sep"]] == tok.pad_id and s["label"] == -1


def test_candidate_samples_put_the_candidate_in_place_and_score_it_with_the_text_after_it(tmp_path, tok):
    task, example = _copa(tmp_path)
    s = encode_example(task, example, tok, 64, causal=True)
    # COPA's pattern '"{choice1}" or "{choice2}"? {premise}{joiner} [MASK].' (choices lower-cased, without
    # their final punctuation; the space before [MASK] goes to the candidate)
    before = _bos(tok) + tok.encode('"it was read" or "the loop ended"? The file was closed because')
    for k, text in enumerate((" it was read", " the loop ended")):
        tokens = before + tok.encode(text) + tok.encode(".")
        n = len(tokens) - 1
        assert s["input_ids"][k][:n].tolist() == tokens[:-1] and s["target_ids"][k][:n].tolist() == tokens[1:]
        assert (s["input_ids"][k][n:] == tok.pad_id).all()
        assert s["length"][k] == n and s["sep"][k] == len(before) - 1
        scored = [1.0 if len(before) - 1 <= i < n else 0.0 for i in range(64)]    # the candidate and the "."
        assert s["loss_mask"][k].tolist() == scored
        assert s["position_ids"][k].tolist() == list(range(n)) + [0] * (64 - n)
    assert s["label"] == 0


def test_a_long_context_is_cut_to_fit_and_every_candidate_sees_the_same(tmp_path, tok):
    long = dict(COPA, premise=" ".join(["The file was closed and the stream was flushed."] * 20))
    task = superglue_task("copa")
    example = read_superglue("copa", write_jsonl(tmp_path / "l.jsonl", [long]))[0]
    s = encode_example(task, example, tok, 40, causal=True)
    assert (s["length"] <= 40).all() and len(set(s["sep"].tolist())) == 1
    assert s["input_ids"][0][:s["sep"][0] + 1].tolist() == s["input_ids"][1][:s["sep"][1] + 1].tolist()
    single = superglue_task("boolq", verbalizer=["module", "list"])
    ex = read_superglue("boolq", write_jsonl(tmp_path / "lb.jsonl", [dict(BOOLQ, passage=long["premise"])]))[0]
    assert encode_example(single, ex, tok, 24, causal=True)["length"] <= 24


def test_bad_examples_are_one_data_error(tmp_path, tok):
    task, example = _copa(tmp_path)
    with pytest.raises(DataError, match="does not fit seq_length 3"):
        encode_example(task, example, tok, 3, causal=True)
    bare = make_task("bare", "[MASK]", ("a", "b"), ("x", "y"))             # single bytes
    first = make_task("first", "[MASK] is it", ("a",))          # candidates, nothing before the [MASK]
    ex = read_superglue("copa", write_jsonl(tmp_path / "x.jsonl", [COPA]))[0]
    if tok.bos_id is None:
        with pytest.raises(DataError, match="no position to read the answer at"):
            encode_example(bare, ex, tok, 16, causal=True)
        with pytest.raises(DataError, match="no position to predict a candidate's first token from"):
            encode_example(first, ex, tok, 16, causal=True)
    else:
        s = encode_example(bare, ex, tok, 16, causal=True)
        assert s["input_ids"][0] == tok.bos_id and s["sep"] == 0 and s["length"] == 1
        s = encode_example(first, ex, tok, 16, causal=True)
        assert (s["input_ids"][:, 0] == tok.bos_id).all() and (s["sep"] == 0).all()


def test_task_logits_of_a_padded_batch_equal_plain_prompts(tmp_path, tok):
    """Through a random decoder: the verbalizer logits read at ``sep`` of a padded batch are the
    next-token logits of each context run alone, and a candidate's score is log p(candidate + "." | left)
    summed token by token from the filled pattern run alone."""
    torch.manual_seed(0)
    cfg = run_config_from_dict({"model": {**STUDENT, "vocab_size": tok.vocab_size, "hidden_dropout": 0.0,
                                          "attention_dropout": 0.0, "max_sequence_length": 64},
                                "data": {"seq_length": 64}}).model
    model = build_stage(cfg, tp_group=None).init_weights(seed=0).eval()

    def run(ids):
        ids = torch.as_tensor(ids).reshape(1, -1)
        return model(ids, torch.arange(ids.shape[1]).unsqueeze(0), torch.tensor([ids.shape[1]]))[0]

    records = [dict(BOOLQ, question=q) for q in ("is it a list", "does the module import a file at all", "why")]
    task = superglue_task("boolq", verbalizer=["module", "list"])
    data = ClozeDataset(task, read_superglue("boolq", write_jsonl(tmp_path / "m.jsonl", records)), tok, 48,
                        causal=True)
    batch = data.collate([data[i] for i in range(len(data))])
    assert len(set(batch["length"].tolist())) == 3             # padded to different lengths
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["position_ids"], batch["length"])
        got = verbalizer_logits(logits, batch["sep"], data.verbalizer_ids)
        for i in range(len(data)):
            context = batch["input_ids"][i, :batch["length"][i]]
            want = run(context)[-1, data.verbalizer_ids]
            torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-4)

        ctask, example = _copa(tmp_path)
        copa = ClozeDataset(ctask, [example], tok, 64, causal=True)
        cb = copa.collate([copa[0]], 2)
        scores = candidate_log_probs(model(cb["input_ids"], cb["position_ids"], cb["length"]), cb["target_ids"],
                                     cb["loss_mask"], vocab_end=tok.vocab_size)
        before = cb["input_ids"][0, :cb["sep"][0] + 1].tolist()
        for k, text in enumerate(example.candidates):
            scored = tok.encode(ctask.answer_prefix + text) + tok.encode(".")     # COPA: "... [MASK]."
            log_p = F.log_softmax(run(before + scored)[:, :tok.vocab_size].double(), -1)
            want = sum(log_p[len(before) - 1 + j, c] for j, c in enumerate(scored))
            assert float(scores[k]) == pytest.approx(float(want), rel=1e-4, abs=1e-4)

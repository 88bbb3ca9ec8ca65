import dataclasses
import math
from collections import Counter

import numpy as np
import pytest

from megatron_glmd.data import DataError
from megatron_glmd.data.blank_infilling import (MODE_GMASK, MODE_MASK, MODE_SMASK, BlankInfillingConfig, assemble,
                                                build_sample, mark_documents)
from megatron_glmd.data.glm_dataset import BlankInfillingDataset
from megatron_glmd.data.tokenizer import SpecialIds, special_ids

# Special ids as a GLM BPE vocabulary of 300 ids lays them out (never constants of the code under test).
IDS = SpecialIds(pad=299, cls=302, mask=303, smask=307, gmask=306, sop=300, eop=301, eod=299)
PAD_ID, SOP_ID, EOP_ID, MASK_ID, SMASK_ID, GMASK_ID = IDS.pad, IDS.sop, IDS.eop, IDS.mask, IDS.smask, IDS.gmask
MASKS = {MASK_ID: MODE_MASK, SMASK_ID: MODE_SMASK, GMASK_ID: MODE_GMASK}


class FixedPermutation:
    """Stands in for a Generator in assemble(): Part-B order given by hand."""

    def __init__(self, order):
        self.order = order

    def permutation(self, n):
        assert n == len(self.order)
        return np.array(self.order)


def test_assemble_hand_checked_one_span():
    s = assemble(np.arange(10, 16), [(2, 4)], MASK_ID, FixedPermutation([0]), seq_length=10, ids=IDS)
    P = PAD_ID
    assert s["input_ids"].tolist() == [10, 11, MASK_ID, 14, 15, SOP_ID, 12, 13, P, P]
    assert s["target_ids"].tolist() == [P, P, P, P, P, 12, 13, EOP_ID, P, P]
    assert s["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 2, 2, 0, 0], [0, 0, 0, 0, 0, 1, 2, 3, 0, 0]]
    assert s["loss_mask"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert (s["sep"], s["length"]) == (5, 8)


def test_assemble_hand_checked_two_spans_shuffled():
    s = assemble(np.array([20, 21, 22, 23, 24, 25]), [(0, 1), (3, 5)], SMASK_ID, FixedPermutation([1, 0]), 11, IDS)
    P = PAD_ID
    assert s["input_ids"].tolist() == [SMASK_ID, 21, 22, SMASK_ID, 25, SOP_ID, 23, 24, SOP_ID, 20, P]
    assert s["target_ids"].tolist() == [P] * 5 + [23, 24, EOP_ID, 20, EOP_ID, P]
    assert s["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 3, 3, 0, 0, 0], [0, 0, 0, 0, 0, 1, 2, 3, 1, 2, 0]]
    assert (s["sep"], s["length"]) == (5, 10)


def decode_sample(s, ids=IDS, masks=None):
    """Independent inverse: (original text, spans as (start, end) in it, mask token) from a sample."""
    masks = masks or MASKS
    PAD_ID, SOP_ID, EOP_ID = ids.pad, ids.sop, ids.eop
    sep, length = s["sep"], s["length"]
    inp, tgt, pos = s["input_ids"], s["target_ids"], s["position_ids"]
    assert (inp[length:] == PAD_ID).all() and (tgt[length:] == PAD_ID).all() and (pos[:, length:] == 0).all()
    assert (tgt[:sep] == PAD_ID).all() and (pos[1, :sep] == 0).all()
    assert pos[0, :sep].tolist() == list(range(sep))
    assert s["loss_mask"].tolist() == [0.0] * sep + [1.0] * (length - sep) + [0.0] * (len(inp) - length)
    blocks, at = {}, sep
    while at < length:  # Part B blocks: [sop] span... with targets span... [eop]
        assert inp[at] == SOP_ID
        end = at + 1
        while end < length and inp[end] != SOP_ID:
            end += 1
        size = end - at
        assert tgt[end - 1] == EOP_ID and tgt[at:end - 1].tolist() == inp[at + 1:end].tolist()
        assert pos[1, at:end].tolist() == list(range(1, size + 1))
        assert len(set(pos[0, at:end].tolist())) == 1
        blocks[int(pos[0, at])] = inp[at + 1:end].tolist()
        at = end
    text, spans, mask_tokens = [], [], set()
    for p in range(sep):
        token = int(inp[p])
        if token in masks:
            mask_tokens.add(token)
            span = blocks.pop(p)  # each mask has exactly one block, each block one mask
            spans.append((len(text), len(text) + len(span)))
            text.extend(span)
        else:
            text.append(token)
    assert not blocks
    return text, spans, mask_tokens


def make_dataset(real_dataset, ids, seq_length=128, task_mask=False, seed=3, **kw):
    cfg = BlankInfillingConfig(seq_length=seq_length, task_mask=task_mask)
    return BlankInfillingDataset(real_dataset, cfg, ids, seed=seed, num_epochs=1, **kw)


@pytest.fixture(params=["cls-only", "cls-and-eod"])
def ids(request, tokenizer):
    """The SentencePiece tokenizer's ids (documents marked by [CLS] only), and the same with an
    end-of-document token as GLM's BPE has one ([SEP] stands in for <|endoftext|>)."""
    base = special_ids(tokenizer)
    return base if request.param == "cls-only" else dataclasses.replace(base, eod=tokenizer.sep_id)


def test_mark_documents_hand_checked():
    tokens, starts, ends, sentences = np.arange(10, 16), [0, 3], [3], [4]
    marked, segments, mapped = mark_documents(tokens, starts, ends, sentences, IDS)
    assert marked.tolist() == [IDS.cls, 10, 11, 12, IDS.eod, IDS.cls, 13, 14, 15]
    assert segments == [(1, 4), (6, 9)] and mapped == [7]
    marked, segments, mapped = mark_documents(tokens, starts, ends, sentences, dataclasses.replace(IDS, eod=None))
    assert marked.tolist() == [IDS.cls, 10, 11, 12, IDS.cls, 13, 14, 15]
    assert segments == [(1, 4), (5, 8)] and mapped == [6]


@pytest.mark.parametrize("task_mask", [False, True])
def test_invariants_over_many_samples(real_dataset, ids, task_mask):
    ds = make_dataset(real_dataset, ids, task_mask=task_mask)
    masks = {ids.mask: MODE_MASK, ids.smask: MODE_SMASK, ids.gmask: MODE_GMASK}
    assert len(ds) > 300
    seen_modes, eods = Counter(), 0
    for n in range(0, len(ds), max(1, len(ds) // 300)):
        window, segments, sentence_starts = ds.window(n)
        # GLM's format: [CLS] before every document piece; markers outside the text segments.
        assert all(window[a - 1] == ids.cls for a, _ in segments) and window[0] == ids.cls
        markers = set(range(len(window))) - {i for a, b in segments for i in range(a, b)}
        assert all(window[i] in (ids.cls, ids.eod) for i in markers)
        eods += sum(window[i] == ids.eod for i in markers) if ids.eod is not None else 0
        s = ds[n]
        text, spans, mask_tokens = decode_sample(s, ids, masks)
        mode = ds.mode_of(n)
        seen_modes[mode] += 1
        assert mask_tokens == {ids.mode_tokens[mode]}
        length = len(text)
        assert text == window[:length].tolist()  # the text is a prefix of the window: tail cut to fit
        assert s["sep"] == length - sum(b - a for a, b in spans) + len(spans)
        assert s["length"] == length + 2 * len(spans) <= 128
        # Masked multiset equals the Part-B targets minus [eop]s: each masked token exactly once.
        masked = Counter(t for a, b in spans for t in text[a:b])
        targets = Counter(s["target_ids"][s["sep"]:s["length"]].tolist())
        assert targets.pop(ids.eop) == len(spans) and targets == masked
        covered = sum(b - a for a, b in spans)
        clipped = [(a, min(b, length)) for a, b in segments if a < length]
        if mode == MODE_MASK:
            assert sum(math.ceil(0.15 * (b - a)) for a, b in clipped) <= covered
            assert covered <= sum(math.ceil(0.15 * (b - a)) + 38 for a, b in clipped)
            assert all(1 <= b - a <= 39 for a, b in spans)
            for a, b in spans:  # inside one segment: never across a document boundary or over a marker
                assert any(x <= a and b <= y for x, y in clipped)
            inside = [[(a, b) for a, b in spans if x <= a < y] for x, y in clipped]
            assert all(b1 < a2 for group in inside for (_, b1), (a2, _) in zip(group, group[1:]))  # gaps
        elif mode == MODE_SMASK:
            assert covered >= math.ceil(0.15 * sum(b - a for a, b in clipped))
            units = {x for seg in clipped for x in seg} | {x for x in sentence_starts if x < length}
            assert all(a in units and b in units for a, b in spans)  # whole sentences
            assert all(any(x <= a and b <= y for x, y in clipped) for a, b in spans)
        else:
            assert len(spans) == 1 and spans[0][1] == length and spans[0][0] >= 1   # [CLS] stays
            assert max(1, math.ceil(0.25 * length)) <= covered <= max(1, length - 1)
    assert len(seen_modes) == (3 if task_mask else 1)
    assert (eods > 0) == (ids.eod is not None)


def test_mask_fraction_and_span_lengths_statistics(real_dataset, tokenizer):
    ds = make_dataset(real_dataset, special_ids(tokenizer), seq_length=256)
    fractions, lengths = [], []
    for n in range(200):
        text, spans, _ = decode_sample(ds[n], ds.special_ids, {ds.special_ids.mask: MODE_MASK})
        _, segments, _ = ds.window(n)
        maskable = sum(min(b, len(text)) - a for a, b in segments if a < len(text))
        fractions.append(sum(b - a for a, b in spans) / maskable)
        lengths.extend(b - a for a, b in spans)
    assert 0.15 <= min(fractions) and np.mean(fractions) < 0.25
    truncated_poisson_mean = 3 / (1 - math.exp(-3))  # E[X | X >= 1], X ~ Poisson(3); 40+ is negligible
    assert abs(np.mean(lengths) - truncated_poisson_mean) < 0.25


def test_mode_frequencies_and_grouping(real_dataset, tokenizer):
    ds = make_dataset(real_dataset, special_ids(tokenizer), task_mask=True)
    modes = Counter(ds.mode_of(n) for n in range(6000))
    for mode, p in zip((MODE_MASK, MODE_SMASK, MODE_GMASK), (0.5, 0.3, 0.2)):
        assert abs(modes[mode] / 6000 - p) < 0.025
    grouped = make_dataset(real_dataset, special_ids(tokenizer), task_mask=True, mode_group_size=8)
    per_group = [{grouped.mode_of(g * 8 + i) for i in range(8)} for g in range(100)]
    assert all(len(m) == 1 for m in per_group)
    assert len(set.union(*per_group)) == 3


def test_determinism(real_dataset, tokenizer):
    ids = special_ids(tokenizer)
    a, b = make_dataset(real_dataset, ids, task_mask=True), make_dataset(real_dataset, ids, task_mask=True)
    c = make_dataset(real_dataset, ids, task_mask=True, seed=4)
    for n in (0, 5, 77):
        for key in ("input_ids", "target_ids", "position_ids", "loss_mask"):
            np.testing.assert_array_equal(a[n][key], b[n][key])
    assert any(not np.array_equal(a[n]["input_ids"], c[n]["input_ids"]) for n in range(5))


def test_window_is_cut_until_the_sample_fits():
    cfg = BlankInfillingConfig(seq_length=20, mask_ratio=0.5, poisson_lambda=1.0, max_span_length=1)
    # Length-1 spans at ratio 0.5: 18 tokens need 9 spans -> 36 positions; the window must shrink.
    s = build_sample(np.arange(100, 118), [(0, 18)], [], MODE_MASK, np.random.default_rng(0), cfg, IDS)
    text, spans, _ = decode_sample(s)
    assert text == list(range(100, 100 + len(text))) and len(text) < 18
    assert s["length"] <= 20 and len(spans) >= math.ceil(0.5 * len(text))


def test_bad_configuration():
    with pytest.raises(DataError, match="mask_ratio"):
        BlankInfillingConfig(seq_length=64, mask_ratio=0.7)
    with pytest.raises(DataError, match="mode_probs"):
        BlankInfillingConfig(seq_length=64, mode_probs=(0.5, 0.5, 0.5))
    with pytest.raises(DataError, match="text_length"):
        BlankInfillingConfig(seq_length=64, text_length=63)
    with pytest.raises(DataError, match="empty window"):
        build_sample(np.zeros(0), [], [], MODE_MASK, np.random.default_rng(0), BlankInfillingConfig(seq_length=8), IDS)


def test_short_documents_at_high_ratio_keep_gaps_and_boundaries():
    cfg = BlankInfillingConfig(seq_length=200, mask_ratio=0.5, poisson_lambda=4.0)  # always fits
    rng = np.random.default_rng(1)
    for trial in range(300):
        doc_starts = [0] + sorted(rng.choice(np.arange(1, 60), size=8, replace=False).tolist())
        marked, segments, _ = mark_documents(np.arange(1000, 1060), doc_starts, [60], [], IDS)
        s = build_sample(marked, segments, [], MODE_MASK, np.random.default_rng(trial), cfg, IDS)
        text, spans, _ = decode_sample(s)
        assert text == marked.tolist() and len(segments) == 9
        for a, e in segments:
            inside = [(x, y) for x, y in spans if a <= x < e]
            assert all(y <= e for _, y in inside)
            assert sum(y - x for x, y in inside) >= math.ceil(0.5 * (e - a))
            assert all(b1 < a2 for (_, b1), (a2, _) in zip(inside, inside[1:]))  # gaps inside a document

"""Ranking the layouts of 40 GPUs: the candidate set from an independent enumeration, the order, the reason."""
import os
import re

import pytest

from megatron_glmd.config import load_run_config, preset
from megatron_glmd.plan.hardware import Hardware
from megatron_glmd.plan.nodelist import expand_nodelist
from megatron_glmd.plan import PlanError
from megatron_glmd.plan.search import rank_layouts, why_first

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "configs", "distill_10b_2b.yaml")


@pytest.fixture(scope="module")
def ranking():
    return rank_layouts(load_run_config(CONFIG), nodes=5, gpus_per_node=8, teacher=preset("glm-10b"))


def test_candidates_are_exactly_the_valid_layouts(ranking):
    # By hand: TP divides the 8 GPUs of a node and both head counts (32, 64); PP divides 40 / TP and is
    # at most 36 layers; DP = 40 / (TP PP) divides the batch 64; micro-batch divides 64 / DP.
    expected = {(tp, pp, mb) for tp in (1, 2, 4, 8) for pp in range(1, 37) if 40 % (tp * pp) == 0
                for dp in [40 // (tp * pp)] if 64 % dp == 0 for mb in range(1, 65) if (64 // dp) % mb == 0}
    got = sorted((p.tp, p.pp, p.micro_batch, p.checkpoint_activations) for p in ranking.plans + ranking.over_memory)
    assert got == sorted((*layout, checkpoint) for layout in expected for checkpoint in (False, True))
    assert {pp for _, pp, _ in expected} == {5, 10, 20}
    assert not ranking.over_memory          # at 40 GiB every one of them fits
    assert all("not divisible" in msg or "must be <=" in msg for _, msg in ranking.refused)


def test_ranked_fastest_first_and_the_reason_names_the_gap(ranking):
    times = [p.step.total for p in ranking.plans]
    assert times == sorted(times)
    first, second = ranking.plans[:2]
    line = why_first(first, second)
    m = re.search(r"beats .* by ([\d.]+) ms/step \(([\d.]+)%\)", line)
    assert m, line
    assert float(m[1]) == pytest.approx(1e3 * (second.step.total - first.step.total), abs=0.051)
    # The parts it names are the largest differences between the two steps' parts.
    diffs = {k: first.step.parts()[k] - second.step.parts()[k] for k in first.step.parts()}
    biggest = max(diffs, key=lambda k: abs(diffs[k]))
    assert line.split(": ", 1)[1].startswith(f"{biggest} {1e3 * diffs[biggest]:+.1f} ms")


def test_memory_budget_filters_and_ties_break_on_memory():
    cfg = load_run_config(CONFIG)
    tight = rank_layouts(cfg, nodes=5, gpus_per_node=8, teacher=preset("glm-10b"),
                         hardware=Hardware(gpu_memory_gib=9.0))
    assert tight.over_memory and all(p.needed_gib > 9.0 for p in tight.over_memory)
    assert all(p.needed_gib <= 9.0 for p in tight.plans)
    # One node, no pipeline, TP=1: no per-micro-batch communication, so micro-batch sizes tie on time
    # and the smaller memory ranks first.
    one = rank_layouts(load_run_config(CONFIG, ["parallel.pp=1"]), nodes=1, gpus_per_node=8,
                       teacher=preset("glm-10b"), hardware=Hardware(gpu_memory_gib=0.0))
    tied = [p for p in one.plans if p.tp == 1 and p.pp == 1 and not p.checkpoint_activations]
    assert [p.micro_batch for p in tied] == sorted(p.micro_batch for p in tied)
    assert "ties" in why_first(tied[0], tied[1])


def test_ranking_needs_the_time_model():
    with pytest.raises(PlanError, match="ranking needs the time model"):
        rank_layouts(load_run_config(CONFIG), nodes=5, gpus_per_node=8, teacher=preset("glm-10b"),
                     hardware=Hardware(peak_tflops=0.0))


@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu[01-05]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu05"]),
    ("node7", ["node7"]),
    ("a[8-10],b1", ["a8", "a9", "a10", "b1"]),
    ("gpu[098-101,200]", ["gpu098", "gpu099", "gpu100", "gpu101", "gpu200"]),
    ("r[1-2]n[3,5]-ib", ["r1n3-ib", "r1n5-ib", "r2n3-ib", "r2n5-ib"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["gpu[01-05", "gpu[a-b]", "gpu[1-2],,x"])
def test_expand_nodelist_rejects_what_it_cannot_parse(bad):
    with pytest.raises(PlanError, match="cannot parse"):
        expand_nodelist(bad)

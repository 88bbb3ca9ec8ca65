"""Slicing steps, the summary, and the artifact written atomically and loaded with checks."""
import json
import os

import numpy as np
import pytest
import torch

from megatron_glmd.compress.artifact import (SUMMARY_FILE, TENSORS_FILE, VocabCompression, load_artifact,
                                             tokens_fingerprint, write_artifact)
from megatron_glmd.compress.ranking import rank_vocabulary
from megatron_glmd.compress.slicing import check_teacher_vocabulary, compress_vocabulary, kept_ids_for, unk_id_for
from megatron_glmd.data import DataError
from megatron_glmd.data.vocab_frequency import FrequencyTable
from megatron_glmd.parallel.vocab import vocab_shard_real_columns

V, H = 700, 12


def table(v=V, protected=(500,)):
    counts = np.random.default_rng(0).zipf(1.5, v) % 1000
    tokens = ["[PAD]", "[UNK]"] + [f"[C{i}]" for i in range(2, 10)] + [f"tok{i}" for i in range(10, v)]
    roles = ["special"] * 10 + ["ordinary"] * (v - 10)
    for i in protected:
        roles[i] = "protected"
    return FrequencyTable(tokens, counts, rank_vocabulary(counts, list(range(10)) + list(protected)), roles)


def embedding(v=V, rows=None, dtype=torch.float32):
    return torch.randn(rows or v, H, generator=torch.Generator().manual_seed(1)).to(dtype)


def test_kept_ids_unk_and_vocabulary_checks():
    t = table()
    kept = kept_ids_for(t, ratio=0.2)
    assert kept.size == 256 and kept.tolist() == t.order[:256].tolist() and 500 in kept
    assert kept_ids_for(t, kept_size=100).tolist() == t.order[:100].tolist()
    assert kept_ids_for(t, ratio=1.0).size == V
    for kwargs, message in [({"ratio": 1.5}, r"r_v must be in \(0, 1\]"), ({}, "exactly one"),
                            ({"ratio": 0.5, "kept_size": 128}, "exactly one"), ({"kept_size": 5}, "cannot hold the 11"),
                            ({"kept_size": 701}, "K = 701 exceeds the 700 ids")]:
        with pytest.raises(DataError, match=message):
            kept_ids_for(t, **kwargs)
    assert unk_id_for(t, "[UNK]") == 1
    with pytest.raises(DataError, match="no special token 'tok11'"):
        unk_id_for(t, "tok11")
    with pytest.raises(DataError, match="vocab_size is 800, but the frequency table has 700 ids"):
        check_teacher_vocabulary(t, 800)
    with pytest.raises(DataError, match="has 600 rows, fewer than vocab_size 700"):
        check_teacher_vocabulary(t, 700, 600)


def test_compress_vocabulary_summary_and_slice():
    t = table()
    e = embedding(rows=768, dtype=torch.bfloat16)           # padded rows beyond v are ignored
    kept = kept_ids_for(t, ratio=0.2)
    art = compress_vocabulary(e, t, kept, mapping="inner", ratio=0.2, student_width=64, device="cpu",
                              chunk_rows=50, progress=False)
    assert torch.equal(art.kept_ids, torch.from_numpy(kept)) and art.token_map.shape == (V,)
    assert art.teacher_output_weight.dtype == torch.bfloat16 and torch.equal(art.teacher_output_weight,
                                                                             e[art.kept_ids])
    s = art.summary
    assert s["kept_size"] == 256 and s["vocab_size"] == V and s["ratio"] == 0.2 and s["mapping"] == "inner"
    assert s["corpus_coverage"] == round(t.counts[kept].sum() / t.counts.sum(), 6)
    assert s["self_mapped_fraction"] == round(256 / V, 6)
    assert s["student_embedding_rows_saved"] == 768 - 256 and s["student_parameters_saved"] == 512 * 64
    dropped = np.setdiff1d(np.arange(V), kept)
    targets, hits = np.unique(art.token_map[dropped].numpy(), return_counts=True)
    spread = s["map_spread"]
    assert spread["dropped_ids"] == hits.max() and spread["target_id"] == targets[hits.argmax()]
    assert spread["target_token"] == t.tokens[spread["target_id"]] and spread["fraction_of_dropped"] == round(
        hits.max() / dropped.size, 6)
    assert s["teacher"] == {"hidden_size": H, "dtype": "bfloat16"}
    assert s["tokens_sha256"] == tokens_fingerprint(t.tokens)
    unk = compress_vocabulary(e, t, kept, mapping="unk", unk_id=1, progress=False)
    assert unk.summary["map_spread"]["dropped_ids"] == V - 256 and unk.summary["map_spread"]["target_token"] == "[UNK]"


def small_artifact():
    t = table()
    kept = kept_ids_for(t, ratio=0.2)
    return t, compress_vocabulary(embedding(), t, kept, ratio=0.2, device="cpu", progress=False)


def test_student_ids_and_teacher_shards():
    t, art = small_artifact()
    rows = art.student_ids()
    assert torch.equal(art.kept_ids[rows], art.token_map)      # student row j holds token kept_ids[j]
    assert torch.equal(rows[art.kept_ids], torch.arange(256))
    for tp in (1, 2, 4):
        shards = [art.teacher_output_shard(r, tp) for r in range(tp)]
        full = torch.cat(shards)
        padded = full.shape[0]
        assert padded % (128 * tp) == 0 and torch.equal(full[:256], art.teacher_output_weight)
        assert not full[256:].any()
        real = [vocab_shard_real_columns(256, padded, r, tp) for r in range(tp)]
        assert sum(real) == 256


def test_write_load_round_trip_is_atomic(tmp_path):
    t, art = small_artifact()
    out = str(tmp_path / "vc")
    write_artifact(out, art)
    assert sorted(os.listdir(tmp_path)) == ["vc"] and sorted(os.listdir(out)) == [SUMMARY_FILE, TENSORS_FILE]
    back = load_artifact(out, vocab_size=V, tokens=t.tokens)
    for name in ("kept_ids", "token_map", "teacher_output_weight"):
        assert torch.equal(getattr(back, name), getattr(art, name))
    assert back.summary["kept_size"] == 256 and json.load(open(os.path.join(out, SUMMARY_FILE)))["version"] == 1
    with pytest.raises(DataError, match="already exists"):
        write_artifact(out, art)
    art2 = VocabCompression(art.kept_ids, art.token_map, art.teacher_output_weight * 2, art.summary)
    write_artifact(out, art2, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["vc"]
    assert torch.equal(load_artifact(out).teacher_output_weight, art.teacher_output_weight * 2)
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="not a vocabulary-compression artifact; not replacing"):
        write_artifact(str(tmp_path / "other"), art, overwrite=True)
    with pytest.raises(DataError, match="parent directory"):
        write_artifact(str(tmp_path / "no" / "vc"), art)


def test_load_refuses_mismatches(tmp_path):
    t, art = small_artifact()
    out = str(tmp_path / "vc")
    write_artifact(out, art)
    with pytest.raises(DataError, match=r"vc/summary\.json: vocab_size: 700, but the run's tokenizer has 800 ids"):
        load_artifact(out, vocab_size=800)
    with pytest.raises(DataError, match=r"vc/summary\.json: tokens_sha256: made for another tokenizer"):
        load_artifact(out, tokens=t.tokens[:-1] + ["zzz"])
    with pytest.raises(DataError, match=r"nope/summary\.json: does not exist"):
        load_artifact(str(tmp_path / "nope"))
    summary = json.load(open(os.path.join(out, SUMMARY_FILE)))
    json.dump({**summary, "kept_size": 255}, open(os.path.join(out, SUMMARY_FILE), "w"))
    with pytest.raises(DataError, match=r"vc/tensors\.safetensors: kept_ids: expected int64 \[255\]"):
        load_artifact(out)
    bad = VocabCompression(art.kept_ids, art.token_map.clone(), art.teacher_output_weight, art.summary)
    bad.token_map[art.kept_ids[20]] = art.kept_ids[21]
    write_artifact(out, bad, overwrite=True)
    with pytest.raises(DataError, match="token_map: a kept id does not map to itself"):
        load_artifact(out)
    (tmp_path / "vc" / TENSORS_FILE).write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"vc/tensors\.safetensors: unreadable"):
        load_artifact(out)

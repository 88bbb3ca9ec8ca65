"""glmd-quickstart end to end on a shortened schedule: corpus → tokenizer → data → teacher →
GLMD student → baseline → held-out table; with --compress-vocab 0.5: frequencies → artifact →
compressed GLMD student → the comparison over the kept tokens. Both families: GLM (SentencePiece,
blank infilling) and --architecture decoder (a byte-level BPE tokenizer.json, next-token loss)."""
import math
import os
import re
import subprocess
import sys

import torch
import yaml

from tests.cli.train_runs import DEEPSPEED_LINES


def _quickstart(workdir, *args, teacher_iters=20, student_iters=8):
    """stdout of a shortened quickstart run with --compress-vocab 0.5, after checking that it succeeded
    and that no phase printed any of DeepSpeed's lines (logging.verbose is off)."""
    proc = subprocess.run([sys.executable, "-m", "megatron_glmd.cli.quickstart", "--workdir", str(workdir),
                           "--teacher-iters", str(teacher_iters), "--student-iters", str(student_iters),
                           "--vocab-size", "1000", "--seq-length", "64", "--batch-size", "8",
                           "--compress-vocab", "0.5", *args],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert [line for line in DEEPSPEED_LINES if line in out + proc.stderr] == [], out[-3000:] + proc.stderr[-3000:]
    return out


def _held_out_rows(out, loss_name):
    """The held-out table's four rows (loss, and KL for the students); every one must be there."""
    assert re.search(rf"^\s+model\s+{loss_name}\s+KL to teacher$", out, re.MULTILINE), out[-2000:]
    rows = {}
    for name, pattern in (("teacher", r"^\s+teacher\s+([\d.]+)\s+-$"),
                          ("glmd", r"^\s+student, GLMD \(L_sp, tau=15\)\s+([\d.]+)\s+([\d.]+)$"),
                          ("glmd_tau1", r"^\s+student, GLMD \(L_sp, tau=1\)\s+([\d.]+)\s+([\d.]+)$"),
                          ("scratch", r"^\s+student, from scratch \(hard labels\)\s+([\d.]+)\s+([\d.]+)$")):
        match = re.search(pattern, out, re.MULTILINE)
        assert match, f"no {name} row in:\n{out[-2000:]}"
        rows[name] = [float(x) for x in match.groups()]
    # The teacher learned something in its few steps: below the uniform distribution's loss.
    assert rows["teacher"][0] < math.log(1000)
    assert all(math.isfinite(x) and x > 0 for values in rows.values() for x in values)
    return rows


def _compared_rows(out, loss_name):
    """The compression table's two rows: parameters, KL, loss, % of targets outside K."""
    assert re.search(rf"^\s+model\s+parameters\s+KL to teacher\s+{loss_name}\s+targets outside K$", out,
                     re.MULTILINE), out[-2000:]
    compared = {}
    for name, label in (("full", r"student, full vocabulary \(tau=15\)"), ("compressed", r"student, r_v = 0.5 \(tau=15\)")):
        match = re.search(rf"^\s+{label}\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) %$", out, re.MULTILINE)
        assert match, f"no {name} row in:\n{out[-2000:]}"
        compared[name] = [float(x.replace(",", "")) for x in match.groups()]
    return compared["full"], compared["compressed"]


def test_quickstart_runs_the_whole_story(tmp_path):
    workdir = tmp_path / "qs"
    out = _quickstart(workdir)
    _held_out_rows(out, "blank-infilling loss")
    # Each phase left a resolved configuration and a complete checkpoint.
    for name, mode in (("teacher", "pretrain"), ("student_glmd", "distill"), ("student_glmd_tau1", "distill"),
                       ("student_scratch", "pretrain")):
        config = yaml.safe_load((workdir / name / "config.yaml").read_text())
        assert config["mode"] == mode
        assert (workdir / name / "latest").read_text() in os.listdir(workdir / name)
    assert yaml.safe_load((workdir / "student_glmd" / "config.yaml").read_text())["loss"]["temperature"] == 15.0
    assert yaml.safe_load((workdir / "student_glmd_tau1" / "config.yaml").read_text())["loss"]["temperature"] == 1.0

    # The compressed vocabulary: K = ceil(1000 * 0.5 / 128) * 128 = 512 kept ids.
    assert "vocabulary compression, r_v = 0.5: K = 512 of 1000 ids" in out
    full, small = _compared_rows(out, "blank-infilling loss")
    assert small[0] == full[0] - (1000 - 512) * 96      # parameters: 488 fewer embedding rows of width 96
    assert all(math.isfinite(x) and x > 0 for x in full[1:3] + small[1:3])
    assert full[3] == small[3] and 0 < small[3] < 100   # the same held-out targets, some outside the kept set
    config = yaml.safe_load((workdir / "student_compressed" / "config.yaml").read_text())
    assert config["model"]["vocab_size"] == 512 and config["vocab_compression"]["artifact"] == str(workdir / "vocab_r0.5")
    assert sorted(os.listdir(workdir / "student_compressed" / "vocab_compression")) == ["summary.json",
                                                                                      "tensors.safetensors"]
    assert (workdir / "data" / "frequencies.tsv").read_text().startswith("id\ttoken\tcount\trank\trole\n")


def test_decoder_quickstart_runs_the_whole_story(tmp_path):
    from tokenizers import Tokenizer

    from megatron_glmd.compress.artifact import load_artifact
    from megatron_glmd.convert.glmd_checkpoint import read_checkpoint
    from megatron_glmd.data.indexed_dataset import IndexedDataset

    workdir = tmp_path / "qs"
    out = _quickstart(workdir, "--architecture", "decoder", teacher_iters=16, student_iters=6)
    _held_out_rows(out, "next-token loss")
    # The byte-level BPE: a tokenizer.json of 1000 ids; each held-out document is stored encoded whole
    # (as the tokenizers library encodes it, no special ids) and decodes back to its text.
    reference = Tokenizer.from_file(str(workdir / "data" / "tokenizer.json"))
    assert reference.get_vocab_size() == 1000 and reference.token_to_id("<|endoftext|>") == 0
    held_out = (workdir / "data" / "valid.txt").read_text(encoding="utf-8").split("\n\n")
    stored = IndexedDataset(str(workdir / "data" / "valid"))
    assert stored.num_documents == len(held_out)
    for doc in (0, len(held_out) - 1):
        ids = stored.document(doc).tolist()
        assert ids == reference.encode(held_out[doc].strip(), add_special_tokens=False).ids
        assert reference.decode(ids) == held_out[doc].strip()
    configs = {}
    for name, mode in (("teacher", "pretrain"), ("student_glmd", "distill"), ("student_glmd_tau1", "distill"),
                       ("student_scratch", "pretrain"), ("student_compressed", "distill")):
        configs[name] = yaml.safe_load((workdir / name / "config.yaml").read_text())
        assert configs[name]["mode"] == mode and configs[name]["model"]["architecture"] == "decoder"
        assert configs[name]["data"]["tokenizer_model"] == str(workdir / "data" / "tokenizer.json")
        assert (workdir / name / "latest").read_text() in os.listdir(workdir / name)
    teacher, student = configs["teacher"]["model"], configs["student_glmd"]["model"]
    assert (teacher["num_layers"], teacher["hidden_size"], teacher["tie_word_embeddings"]) == (4, 192, False)
    assert (student["num_layers"], student["hidden_size"], student["tie_word_embeddings"]) == (2, 96, True)
    assert teacher["num_key_value_heads"] == student["num_key_value_heads"] == 2

    # r_v = 0.5: K = 512 kept ids; the untied teacher's sliced matrix is its output layer's kept rows.
    assert "vocabulary compression, r_v = 0.5: K = 512 of 1000 ids" in out
    full, small = _compared_rows(out, "next-token loss")
    assert small[0] == full[0] - (1000 - 512) * 96      # the tied student: 488 fewer embedding rows of width 96
    assert all(math.isfinite(x) and x > 0 for x in full[1:3] + small[1:3])
    assert full[3] == small[3] and 0 < small[3] < 100
    vc = load_artifact(str(workdir / "vocab_r0.5"))
    _, state = read_checkpoint(str(workdir / "teacher"))
    assert torch.equal(vc.teacher_output_weight, state["lm_head"][vc.kept_ids])
    assert configs["student_compressed"]["model"]["vocab_size"] == 512


def test_decoder_quickstart_refuses_a_vocabulary_below_the_byte_alphabet(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "megatron_glmd.cli.quickstart", "--architecture", "decoder",
                           "--workdir", str(tmp_path / "qs"), "--vocab-size", "200"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --vocab-size: a byte-level BPE needs at least 257 ids "
                                                "(every byte and <|endoftext|>), got 200"]
    assert not (tmp_path / "qs").exists()

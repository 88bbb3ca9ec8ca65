"""launch/configs/ for the decoder pairs: each validates, names a decoder model with a tokenizer.json,
its layout is glmd-launch-plan --rank's first choice on 40 A100-40GB (and the 8-GPU overrides its
comment gives are the first choice on one node), and the Slurm script runs it from GLMD_CONFIG."""
import os
import re

import pytest

from megatron_glmd.config import load_run_config, preset
from megatron_glmd.plan.layout import check_layout, check_teacher
from megatron_glmd.plan.search import rank_layouts

from .helpers import FAKE_SLURM, REPO, SLURM_SCRIPT, clean_env, launch_command, run

PAIRS = [("distill_llama3_8b_1b.yaml", "llama-3-8b", "llama-3.2-1b"),
         ("distill_qwen2.5_7b_1.5b.yaml", "qwen2.5-7b", "qwen2.5-1.5b")]


def _path(name):
    return os.path.join(REPO, "launch", "configs", name)


def _eight_gpu_sets(path):
    """The ``--set`` overrides the config's comment gives for one node of 8 GPUs."""
    text = open(path, encoding="utf-8").read()
    m = re.search(r"8 GPUs \(one node\).*?\n#\s+((?:--set \S+ ?)+)", text, re.S)
    assert m, "the config's comment gives no 8-GPU layout"
    return [s.rstrip(",") for s in m.group(1).replace("--set ", "").split()]


@pytest.mark.parametrize("name,teacher,student", PAIRS)
def test_config_validates_as_a_decoder_run(name, teacher, student):
    cfg = load_run_config(_path(name))
    assert cfg.mode == "distill" and cfg.model.is_decoder
    assert cfg.data.tokenizer_type == "hf" and cfg.data.tokenizer_model.endswith("tokenizer.json")
    assert cfg.teacher_checkpoint and cfg.data.seq_length == 2048 and cfg.train.global_batch_size == 128
    # The student is the preset's shape (the Qwen student takes the teacher's 152,064 embedding rows).
    shape = preset(student, vocab_size=preset(teacher).vocab_size)
    assert cfg.model.replace(vocab_size=shape.vocab_size) == shape
    assert check_layout(cfg, nodes=5, gpus_per_node=8) == 4
    check_teacher(cfg, preset(teacher))


@pytest.mark.parametrize("name,teacher,student", PAIRS)
@pytest.mark.parametrize("nodes", [5, 1])
def test_config_layout_is_the_planners_first_choice(name, teacher, student, nodes):
    sets = _eight_gpu_sets(_path(name)) if nodes == 1 else []
    cfg = load_run_config(_path(name), sets)
    ranking = rank_layouts(cfg, nodes=nodes, gpus_per_node=8, teacher=preset(teacher))
    first = ranking.plans[0]
    assert (first.tp, first.pp, first.micro_batch) == (cfg.parallel.tp, cfg.parallel.pp, cfg.train.micro_batch_size)
    # checkpoint_activations: auto, and auto's choice for this layout is the ranked first variant
    assert cfg.train.checkpoint_activations == "auto" and ranking.is_auto_choice(first)
    assert not first.checkpoint_activations and first.fits
    assert first.needed_gib < 40 - 5        # comfortably inside what an A100-40GB reports to CUDA


@pytest.mark.parametrize("name,teacher,student", PAIRS)
def test_slurm_script_runs_the_config_from_glmd_config(name, teacher, student):
    env = clean_env(**FAKE_SLURM, GLMD_CONFIG=f"launch/configs/{name}", GLMD_TEACHER_MODEL=teacher,
                    GLMD_TOKENIZER="/data/tok/tokenizer.json")
    result = run(SLURM_SCRIPT, "--dry-run", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "layout:      TP=2 PP=5 DP=4" in result.stdout
    assert "activation checkpointing auto -> off" in result.stdout
    argv = launch_command(result.stdout)
    assert argv[argv.index("--config") + 1] == f"launch/configs/{name}"
    assert "data.tokenizer_model=/data/tok/tokenizer.json" in argv

"""megatron-glmd checkpoints read and written unsplit: agree with what a pretrain run saves and what
the engine's teacher loader reads, at every layout; bad files stop with the file's name."""
import os

import pytest
import torch

from megatron_glmd.config import preset
from megatron_glmd.convert import ConvertError, read_checkpoint, write_checkpoint
from megatron_glmd.convert.glmd_checkpoint import layer_file
from megatron_glmd.model import GLMStage
from tests.convert.glm_reference import RunsCode
from tests.distributed import run_distributed

CONFIG = preset("tiny-teacher", vocab_size=300, max_sequence_length=32, hidden_dropout=0.0, attention_dropout=0.0)


def random_state(config=CONFIG, seed=0):
    """Unsplit random weights under GLMStage's names, ``vocab_size`` embedding rows."""
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=generator) for k, v in GLMStage(config).state_dict().items()}
    state["word_embeddings.weight"] = state["word_embeddings.weight"][:config.vocab_size].clone()
    return state




def _pretrain_and_report(rank, world, tp, pp, save_dir):
    from megatron_glmd.engine.trainer import Trainer
    from tests.distill.engine_cases import run_config, train_data

    trainer = Trainer(run_config("pretrain", tp, pp, save_dir, iterations=1), train_data())
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.stage.student.state_dict().items()}


def test_reads_and_writes_what_a_pipeline_run_saves(tmp_path):
    save_dir = str(tmp_path / "run")
    stages = run_distributed(2, _pretrain_and_report, 1, 2, save_dir)
    config, state = read_checkpoint(save_dir)
    assert config.num_layers == 4 and config.vocab_size == 300
    for stage in stages:
        for name, value in stage.items():
            expected = value[:config.vocab_size] if name == "word_embeddings.weight" else value
            assert torch.equal(state[name], expected), name
    # Written back at the run's layout, every file holds the run's keys and (real-row) values.
    write_checkpoint(str(tmp_path / "copy"), config, state, 1, 2)
    with open(os.path.join(save_dir, "latest")) as f:
        tag = f.read().strip()
    for stage in range(2):
        ours = torch.load(os.path.join(tmp_path, "copy", "iter_0000000", layer_file(stage, 0)), weights_only=True)
        theirs = torch.load(os.path.join(save_dir, tag, layer_file(stage, 0)), weights_only=True)
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            rows = config.vocab_size if key.endswith("word_embeddings.weight") else None
            assert ours[key].shape == value.shape and torch.equal(ours[key][:rows], value[:rows]), key


@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2), (4, 2), (2, 3)])
def test_write_read_round_trip_is_exact(tmp_path, tp, pp):
    state = random_state()
    write_checkpoint(str(tmp_path / "ckpt"), CONFIG, state, tp, pp)
    config, back = read_checkpoint(str(tmp_path / "ckpt"))
    assert config == CONFIG and back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_bad_files_name_the_file_and_key(tmp_path):
    state = random_state()
    ckpt = str(tmp_path / "ckpt")
    write_checkpoint(ckpt, CONFIG, state, 2, 1)
    path = os.path.join(ckpt, "iter_0000000", layer_file(0, 1))
    content = torch.load(path, weights_only=True)
    torch.save({**content, "student.extra": torch.zeros(1)}, path)
    with pytest.raises(ConvertError, match=r"model_01-model_states\.pt: unexpected key 'student.extra'"):
        read_checkpoint(ckpt)
    content["student.layers.0.attention.qkv.weight"] = torch.zeros(3, 3)
    torch.save(content, path)
    with pytest.raises(ConvertError, match=r"layers\.0\.attention\.qkv\.weight has shape \(3, 3\)"):
        read_checkpoint(ckpt)
    marker = tmp_path / "code-ran"
    torch.save({"student.word_embeddings.weight": RunsCode(str(marker))}, path)
    with pytest.raises(ConvertError, match=r"model_01-model_states\.pt: not a weights-only torch file"):
        read_checkpoint(ckpt)
    assert not marker.exists()
    os.remove(path)
    with pytest.raises(ConvertError, match=r"model_01-model_states\.pt: missing"):
        read_checkpoint(ckpt)
    with pytest.raises(ConvertError, match="not empty"):
        write_checkpoint(ckpt, CONFIG, state, 1, 1)
    with pytest.raises(ConvertError, match="missing key 'final_layernorm.bias'"):
        write_checkpoint(str(tmp_path / "other"), CONFIG,
                         {k: v for k, v in state.items() if k != "final_layernorm.bias"}, 1, 1)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_any_pipeline_partition_reads_back(tmp_path):
    """Files written with another (e.g. FLOP-balanced) partition read back the same."""
    state = random_state()
    write_checkpoint(str(tmp_path / "ckpt"), CONFIG, state, 2, 2, layer_ranges=[(0, 1), (1, 4)])
    first = torch.load(tmp_path / "ckpt" / "iter_0000000" / layer_file(0, 0), weights_only=True)
    assert not any(k.startswith("student.layers.1.") for k in first)
    _, back = read_checkpoint(str(tmp_path / "ckpt"))
    assert all(torch.equal(back[k], state[k]) for k in state)

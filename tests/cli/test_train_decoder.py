"""glmd-train on a decoder: a corpus tokenised with a tokenizer.json (Llama-3 style: no pad), a run
whose `auto` tokenizer type reads it as a Hugging Face tokenizer and whose samples are causal; the
decoder's misconfigurations stop with one `error:` line before any work."""
import pytest
import yaml

from megatron_glmd.config import preset
from megatron_glmd.convert import write_checkpoint
from megatron_glmd.data.preprocess import preprocess
from megatron_glmd.model import GLMStage
from tests.cli.train_runs import train, train_forked
from tests.data.corpus import paragraphs, train_byte_level_bpe

VOCAB = 384
DECODER = {"architecture": "decoder", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
           "num_key_value_heads": 2, "ffn_hidden_size": 64, "max_sequence_length": 64}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoder_cli")
    (folder / "tok").mkdir()
    train_byte_level_bpe(folder / "tok", VOCAB, 300, special_tokens=("<|begin_of_text|>", "<|end_of_text|>"))
    texts = paragraphs()
    for split, part in (("train", texts[:300]), ("valid", texts[300:360])):
        (folder / f"{split}.txt").write_text("\n\n".join(part), encoding="utf-8")
        preprocess([str(folder / f"{split}.txt")], str(folder / split), str(folder / "tok" / "tokenizer.json"),
                   progress=False, tokenizer_type="hf")
    return folder


def _config(corpus, tmp_path, vocab_size=VOCAB, **data):
    values = {
        "mode": "pretrain",
        "model": {**DECODER, "vocab_size": vocab_size},
        "train": {"iterations": 2, "micro_batch_size": 2, "global_batch_size": 4},
        "data": {"train_prefix": str(corpus / "train"), "valid_prefix": str(corpus / "valid"),
                 "tokenizer_model": str(corpus / "tok" / "tokenizer.json"), "seq_length": 64, **data},
        "checkpoint": {"save_dir": str(tmp_path / "run")},
        "logging": {"log_interval": 1, "eval_iters": 1, "progress_bar": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_pretrain_a_decoder_on_a_tokenizer_json_corpus(corpus, tmp_path):
    # An embedding with more rows than the tokenizer has ids (as Qwen2's) is accepted for a decoder.
    proc = train(_config(corpus, tmp_path, vocab_size=VOCAB + 16))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "held-out: student_loss" in out and (tmp_path / "run" / "iter_0000002").is_dir()


def _one_error_line(stderr, named):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], stderr[-3000:]


def test_decoder_misconfigurations_give_one_line(corpus, tmp_path):
    glm = preset("tiny-teacher", vocab_size=VOCAB, max_sequence_length=64, num_layers=2)
    write_checkpoint(str(tmp_path / "glm_teacher"), glm, GLMStage(glm).state_dict(), tp=1, pp=1)
    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    cases = [(["--set", "data.task_mask=true"], "data.task_mask"),
             (["--set", f"data.tokenizer_model={tmp_path / 'tokenizer.json'}"],
              "data.tokenizer_model: " + str(tmp_path / "tokenizer.json") + ": not a Hugging Face tokenizer.json"),
             (["--set", "model.vocab_size=300"], "model.vocab_size=300"),
             (["--set", "mode=distill", "--set", f"teacher_checkpoint={tmp_path / 'glm_teacher'}"],
              "teacher architecture 'glm', student architecture 'decoder'")]
    path = _config(corpus, tmp_path)
    for args, named in cases:
        done = train_forked(path, *args)
        assert done.returncode == 2, done.stderr[-3000:]
        _one_error_line(done.stderr, named)
    assert not (tmp_path / "run").exists()

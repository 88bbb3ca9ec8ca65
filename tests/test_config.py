"""Model configuration: presets, YAML loading, and validation messages that name the field."""
import pytest

from megatron_glmd.config import PRESETS, ConfigError, from_dict, load_config, preset
from megatron_glmd.parallel import pad_vocab_size, vocab_shard_range, vocab_shard_real_columns


def test_presets_hold_published_shapes():
    assert (preset("glm-10b").num_layers, preset("glm-10b").hidden_size, preset("glm-10b").num_attention_heads) \
        == (48, 4096, 64)
    assert (preset("glm-2b").num_layers, preset("glm-2b").hidden_size, preset("glm-2b").num_attention_heads) \
        == (36, 2048, 32)
    assert preset("glm-large").padded_vocab_size(1) == 30592
    assert preset("glm-10b").padded_vocab_size(1) == 50304
    for name in PRESETS:
        preset(name).validate()


def test_presets_are_the_published_glm_shapes():
    """The preset YAML files are the one source of the shapes; check them against the GLM papers."""
    published = {"glm-base": (12, 768, 12), "glm-large": (24, 1024, 16), "glm-2b": (36, 2048, 32),
                 "glm-10b": (48, 4096, 64)}
    for name, (layers, hidden, heads) in published.items():
        c = preset(name).validate()
        assert (c.num_layers, c.hidden_size, c.num_attention_heads) == (layers, hidden, heads), name
    assert {"tiny-teacher", "tiny-student"} <= set(PRESETS)


def test_reading_a_config_imports_no_torch(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "run.yaml"
    path.write_text("model: {preset: tiny-student}\ndata: {train_prefix: x}\n")
    code = ("import sys; from megatron_glmd.config import load_run_config; "
            f"load_run_config({str(path)!r}); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("changes,tp,pp,message", [
    (dict(num_attention_heads=5), 1, 1, "num_attention_heads (5) must divide hidden_size (64)"),
    (dict(num_attention_heads=4), 8, 1, "tensor-parallel size 8 must divide num_attention_heads (4)"),
    (dict(hidden_size=-64), 1, 1, "hidden_size must be positive"),
    (dict(num_layers=0), 1, 1, "num_layers must be positive"),
    (dict(num_layers=4), 1, 5, "pipeline-parallel size 5 must be <= num_layers (4)"),
    (dict(hidden_dropout=1.5), 1, 1, "hidden_dropout must be in [0, 1)"),
    (dict(dtype="fp8"), 1, 1, "dtype must be one of fp32, bf16, fp16"),
    (dict(ffn_hidden_size=250), 4, 1, "tensor-parallel size 4 must divide ffn_hidden_size (250)"),
])
def test_invalid_configs_name_field_and_constraint(changes, tp, pp, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        preset("tiny-teacher", **changes).validate(tp_size=tp, pp_size=pp)


def test_unknown_key_and_wrong_type_are_named(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: glm-2b\nnum_layer: 12\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown config key 'num_layer'"):
        load_config(str(path))
    path.write_text("preset: glm-2b\nnum_layers: twelve\n")
    with pytest.raises(ConfigError, match="field 'num_layers' must be of type int, got 'twelve'"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="missing required config key 'num_layers'"):
        from_dict({"hidden_size": 8})
    with pytest.raises(ConfigError, match="unknown preset 'glm-3b'"):
        from_dict({"preset": "glm-3b"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_yaml_overrides_a_preset(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: glm-2b\nnum_layers: 12\nhidden_dropout: 0\n")
    config = load_config(str(path))
    assert config.num_layers == 12 and config.hidden_size == 2048 and config.hidden_dropout == 0.0


def test_vocab_padding_and_shards():
    assert pad_vocab_size(50257, 1) == 50304
    assert pad_vocab_size(50257, 8) == 51200 and 51200 % (128 * 8) == 0
    assert pad_vocab_size(128, 2) == 256
    assert vocab_shard_range(1024, 2, 4) == (512, 768)
    # vocab 1000 padded to 1024 at TP=4: shards of 256; shard 3 holds 1000-768 = 232 real ids.
    assert [vocab_shard_real_columns(1000, 1024, r, 4) for r in range(4)] == [256, 256, 256, 232]
    # a shard made only of padding
    assert vocab_shard_real_columns(100, 1024, 1, 4) == 0
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        pad_vocab_size(0, 1)

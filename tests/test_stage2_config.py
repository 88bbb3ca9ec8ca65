"""The stage-2 parts of a run configuration (config/stage2.py): the task modes and ``task:`` section,
a model taken from ``init_checkpoint``, and the epoch-based schedule (iterations from the training
set, warm-up ratio, linear decay)."""
import pytest
import yaml

from megatron_glmd.config import ConfigError, run_config_from_dict
from megatron_glmd.config.stage2 import SUPERGLUE_TASKS, resolve_schedule
from megatron_glmd.engine.optim import cosine_lr
from megatron_glmd.tasks import TASKS


def _values(tmp_path, **changes):
    task = tmp_path / "task.yaml"
    task.write_text('name: t\npattern: "{text} [MASK]."\nverbalizer: {a: yes, b: no}\n', encoding="utf-8")
    values = {"mode": "finetune", "model": {"preset": "tiny-student"}, "task": {"file": str(task)},
              "train": {"epochs": 3, "global_batch_size": 8, "micro_batch_size": 2},
              "optimizer": {"lr": 1e-3, "warmup_ratio": 0.1, "decay_style": "linear"}, "data": {"seq_length": 64}}
    values.update(changes)
    return values


def test_the_superglue_names_are_the_tasks_package_ones():
    assert sorted(SUPERGLUE_TASKS) == sorted(TASKS)


def test_epochs_and_warmup_ratio_become_iterations(tmp_path):
    cfg = run_config_from_dict(_values(tmp_path)).validate(1)
    resolved = resolve_schedule(cfg, num_train_examples=50)
    assert resolved.train.iterations == 19                  # ceil(3 * 50 / 8)
    assert resolved.optimizer.warmup_iters == 2             # round(0.1 * 19)
    assert resolved.optimizer.warmup_ratio is None
    resolved.validate(1)
    assert resolve_schedule(cfg, 1).train.iterations == 1


def test_linear_decay_as_glm_fine_tunes(tmp_path):
    opt = resolve_schedule(run_config_from_dict(_values(tmp_path)), 80).optimizer   # 30 iterations, 3 warm-up
    lrs = [cosine_lr(i, opt, 30) for i in range(30)]
    assert lrs[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert lrs[3] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-3 * (1 - 26 / 27))
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))
    steps = [a - b for a, b in zip(lrs[3:], lrs[4:])]
    assert max(steps) == pytest.approx(min(steps))          # a straight line


def test_model_from_init_checkpoint(tmp_path):
    init = tmp_path / "init"
    init.mkdir()
    saved = run_config_from_dict({"model": {"preset": "tiny-teacher", "vocab_size": 777}, "data": {}}).to_dict()
    (init / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    values = _values(tmp_path, init_checkpoint=str(init))
    del values["model"]
    cfg = run_config_from_dict(values)
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.vocab_size) == (4, 64, 777)
    cfg = run_config_from_dict({**values, "model": {"hidden_dropout": 0.0}})        # keys on top of the saved model
    assert cfg.model.vocab_size == 777 and cfg.model.hidden_dropout == 0.0
    cfg = run_config_from_dict({**values, "model": {"preset": "tiny-student"}})     # a complete model is as given
    assert cfg.model.num_layers == 2
    values["init_checkpoint"] = str(tmp_path)
    with pytest.raises(ConfigError, match="config.yaml is missing"):
        run_config_from_dict(values)


@pytest.mark.parametrize("change,message", [
    (dict(mode="distill", teacher_checkpoint=".", task=None), "train.epochs needs a task mode"),
    (dict(mode="pretrain", train={}, task=None), "optimizer.warmup_ratio needs a task mode"),
    (dict(task={"file": "x.yaml", "name": "rte"}), "not both"),
    (dict(task={"name": "rte", "data_dir": "/nonexistent"}), "task.data_dir"),
    (dict(task={"file": "/nonexistent.yaml"}), "task.file: /nonexistent.yaml does not exist"),
    (dict(mode="pretrain", optimizer={}, train={}), "task: only the modes"),
    (dict(optimizer={"decay_style": "step"}), "optimizer.decay_style must be one of cosine, linear"),
    (dict(optimizer={"warmup_ratio": 1.0}), "optimizer.warmup_ratio must be in [0, 1)"),
    (dict(train={"epochs": 0}), "train.epochs must be a finite number > 0"),
    (dict(task=None), "mode 'finetune' needs a task"),
    (dict(loss={"hard_label_weight": 0.5}), "loss.hard_label_weight is a stage-1 switch"),
])
def test_bad_stage2_settings(tmp_path, change, message):
    values = _values(tmp_path, **change)
    values = {k: v for k, v in values.items() if v is not None}
    if values["mode"] in ("pretrain", "distill"):
        values["data"] = {"train_prefix": "x", "seq_length": 64}
    with pytest.raises(ConfigError) as info:
        run_config_from_dict(values).validate(1)
    assert message in str(info.value)

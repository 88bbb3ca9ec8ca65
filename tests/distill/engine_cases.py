"""Shared set-up of the engine tests: a tiny run configuration and deterministic synthetic data.

Every engine test builds its runs from here, so that a layout, resume or golden-loss test differs
from the others only in what it checks.
"""
from megatron_glmd.config import run_config_from_dict
from tests.distill.synthetic import SyntheticGLMSamples

VOCAB, SEQ = 300, 24


def run_config(mode, tp, pp, save_dir, teacher=None, iterations=4, **train):
    """A tiny teacher (pretrain) or student (distill) run at TP=tp, PP=pp, DP = world / (tp * pp)."""
    model = {"preset": "tiny-teacher" if mode == "pretrain" else "tiny-student", "vocab_size": VOCAB,
             "hidden_dropout": 0.0, "attention_dropout": 0.0, "max_sequence_length": 32}
    return run_config_from_dict({
        "mode": mode, "model": model, "teacher_checkpoint": teacher,
        "parallel": {"tp": tp, "pp": pp},
        "train": {"iterations": iterations, "micro_batch_size": 2, "global_batch_size": 8, "seed": 7, **train},
        # A large Adam eps keeps the update a smooth function of the gradient, so that rounding
        # differences between layouts are not amplified into sign flips of tiny-gradient updates.
        "optimizer": {"lr": 1e-2, "warmup_iters": 1, "eps": 1e-3},
        "data": {"train_prefix": "synthetic", "seq_length": SEQ},
        "checkpoint": {"save_dir": save_dir},
        "logging": {"log_interval": 100, "progress_bar": False, "eval_iters": 2},
    })


def train_data():
    return SyntheticGLMSamples(256, SEQ, VOCAB, seed=1)


def valid_data():
    return SyntheticGLMSamples(64, SEQ, VOCAB, seed=2)

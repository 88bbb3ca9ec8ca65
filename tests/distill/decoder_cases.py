"""Shared set-up of the decoder family's engine tests: tiny decoder run configurations and packed
causal samples (data/causal_dataset.py) from a small synthetic indexed corpus.

The teacher has an untied output layer and GQA with 2 KV heads (sharded at TP = 2); the student
ties its output layer to the embedding (a copy on the last stage at PP = 2) and has 4 KV heads."""
import os

import numpy as np

from megatron_glmd.config import run_config_from_dict
from megatron_glmd.data.causal_dataset import CausalDataset
from megatron_glmd.data.indexed_dataset import IndexedDataset, write_documents

VOCAB, SEQ, EOD, PAD = 300, 24, 2, 0
TEACHER = {"architecture": "decoder", "num_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
           "num_key_value_heads": 2, "ffn_hidden_size": 128, "rope_theta": 10000.0, "qkv_bias": True}
STUDENT = {"architecture": "decoder", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
           "ffn_hidden_size": 64, "tie_word_embeddings": True}


def run_config(mode, tp, pp, save_dir, teacher=None, iterations=4, **train):
    """A tiny decoder teacher (pretrain) or student (distill) run at TP=tp, PP=pp, DP = world / (tp * pp)."""
    shape = TEACHER if mode == "pretrain" else STUDENT
    model = {**shape, "vocab_size": VOCAB, "hidden_dropout": 0.0, "attention_dropout": 0.0,
             "max_sequence_length": 32}
    return run_config_from_dict({
        "mode": mode, "model": model, "teacher_checkpoint": teacher,
        "parallel": {"tp": tp, "pp": pp},
        "train": {"iterations": iterations, "micro_batch_size": 2, "global_batch_size": 8, "seed": 7, **train},
        "optimizer": {"lr": 1e-2, "warmup_iters": 1, "eps": 1e-3},   # as tests/distill/engine_cases.py
        "data": {"train_prefix": "synthetic", "seq_length": SEQ},
        "checkpoint": {"save_dir": save_dir},
        "logging": {"log_interval": 100, "progress_bar": False, "eval_iters": 2},
    })


def write_corpus(prefix: str, num_docs: int, seed: int) -> None:
    """Documents of 1..40 Zipf-distributed ids (3..VOCAB-1, never EOD or PAD): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, VOCAB - 2)
    probs = 1.0 / ranks
    docs = [[(rng.choice(ranks, size=int(n), p=probs / probs.sum()) + 2).tolist()]
            for n in rng.integers(1, 41, num_docs)]
    write_documents(prefix, VOCAB, docs)


def causal_data(workdir: str, split: str, num_samples: int) -> CausalDataset:
    prefix = os.path.join(workdir, split)
    if not os.path.exists(prefix + ".idx"):
        raise FileNotFoundError(prefix)
    return CausalDataset(IndexedDataset(prefix), SEQ, EOD, PAD, seed=1 if split == "train" else 2,
                         num_samples=num_samples)


def make_corpora(workdir: str) -> None:
    write_corpus(os.path.join(workdir, "train"), 200, seed=1)
    write_corpus(os.path.join(workdir, "valid"), 60, seed=2)

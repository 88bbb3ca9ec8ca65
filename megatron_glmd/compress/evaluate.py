"""Held-out figures over the kept tokens of a compressed vocabulary, for any student, on one process.

To put a compressed student next to a full-vocabulary one (the quickstart), both are measured over
the same K tokens: the teacher decodes with its sliced matrix ``W_vT[kept_ids]``; a compressed
student (K rows) reads mapped ids and its logits are its K real columns; a full-vocabulary student
reads the ids unmapped and its logits are gathered at ``kept_ids``. Then, per held-out sample:

- ``kl``: KL(teacher ‖ student) at τ = 1 over the kept tokens, per valid (non-pad) token;
- ``student_loss``: blank-infilling cross-entropy at the mapped targets (student rows), per target;
- ``targets_outside_kept``: the share of targets whose id is not kept (the map changed it).

A compressed run's own evaluation (:meth:`megatron_glmd.engine.trainer.Trainer.evaluate`)
computes the same three figures for its student, on shards; the tests compare the two. This one
runs the models unsplit at TP = 1 in fp64 softmaxes: for the small models of the quickstart.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ..convert.glmd_checkpoint import EMBEDDING, read_checkpoint
from ..data.loader import collate
from ..model import GLMStage
from ..model.attention_mask import valid_token_mask
from .artifact import load_artifact


def load_model(save_dir: str) -> Tuple[GLMStage, int]:
    """The model of a checkpoint at TP = 1, PP = 1 in eval mode, and its number of parameters
    (real vocabulary rows only)."""
    config, state = read_checkpoint(save_dir)
    parameters = sum(t.numel() for t in state.values())
    rows = state[EMBEDDING]
    state[EMBEDDING] = torch.cat([rows, rows.new_zeros(config.padded_vocab_size() - rows.shape[0], rows.shape[1])])
    model = GLMStage(config).eval()
    model.load_state_dict(state)
    return model, parameters


@torch.no_grad()
def kept_token_metrics(student_dir: str, teacher_dir: str, artifact_dir: str, dataset, num_samples: int,
                       batch_size: int = 8) -> Dict[str, float]:
    """``parameters``, ``kl``, ``student_loss`` and ``targets_outside_kept`` of the student saved in
    ``student_dir`` on the first ``num_samples`` samples of ``dataset`` (see the module docstring)."""
    vc = load_artifact(artifact_dir)
    k, rows = vc.kept_size, vc.student_ids()
    teacher, _ = load_model(teacher_dir)
    teacher.decode_with(vc.teacher_output_shard())
    student, parameters = load_model(student_dir)
    compressed = student.config.vocab_size == k and k != vc.vocab_size
    totals = torch.zeros(5, dtype=torch.float64)       # kl, cross-entropy, valid, targets, outside
    for start in range(0, min(num_samples, len(dataset)), batch_size):
        b = collate([dataset[i] for i in range(start, min(start + batch_size, num_samples, len(dataset)))])
        ids, positions, sep, length = b["input_ids"], b["position_ids"], b["sep"], b["length"]
        teacher_logp = F.log_softmax(teacher(ids, positions, sep, length)[..., :k].double(), dim=-1)
        student_logits = student(rows[ids] if compressed else ids, positions, sep, length)
        student_logits = student_logits[..., :k] if compressed else student_logits[..., vc.kept_ids]
        student_logp = F.log_softmax(student_logits.double(), dim=-1)
        valid = valid_token_mask(length, ids.shape[1])
        kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
        targets, is_target = b["target_ids"], b["loss_mask"] > 0
        ce = -student_logp.gather(-1, rows[targets].unsqueeze(-1)).squeeze(-1)
        outside = vc.token_map[targets] != targets
        totals += torch.stack([kl[valid].sum(), ce[is_target].sum(), valid.sum().double(),
                               is_target.sum().double(), outside[is_target].sum().double()])
    kl, ce, n_valid, n_targets, n_outside = totals.tolist()
    return {"parameters": parameters, "kl": kl / max(n_valid, 1.0), "student_loss": ce / max(n_targets, 1.0),
            "targets_outside_kept": n_outside / max(n_targets, 1.0)}

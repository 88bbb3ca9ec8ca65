"""Cloze tasks for the task-specific stage (docs/design.md, "The two stages"): SuperGLUE readers with
GLM's patterns and verbalizers, tasks of your own in YAML, GLM samples, vocab-parallel task logits,
the stage-2 losses and the task metrics."""
from .batch import ClozeDataset, collate_candidates, collate_single, encode_example
from .custom import load_task, read_split, read_task_file, task_from_config
from .encode import encode_candidates, encode_single, protected_token_ids, verbalizer_token_ids
from .encode_causal import encode_candidates_causal, encode_single_causal
from .losses import label_cross_entropy_sum, soft_cross_entropy_sum
from .metrics import compute_metrics
from .scoring import candidate_log_probs, check_verbalizer_ids, choice_scores, verbalizer_logits
from .superglue import EPOCHS, TASKS, read_superglue, superglue_task
from .task import ClozeExample, ClozeTask, make_task

__all__ = [
    "ClozeDataset", "collate_candidates", "collate_single", "load_task", "read_split", "read_task_file",
    "task_from_config", "encode_candidates", "encode_example", "encode_single", "encode_candidates_causal",
    "encode_single_causal", "protected_token_ids",
    "verbalizer_token_ids", "label_cross_entropy_sum", "soft_cross_entropy_sum", "compute_metrics",
    "candidate_log_probs", "check_verbalizer_ids", "choice_scores", "verbalizer_logits", "EPOCHS", "TASKS", "read_superglue",
    "superglue_task", "ClozeExample", "ClozeTask", "make_task",
]

"""What a cloze task is: a pattern with one [MASK], and either a verbalizer (one token per label) or
per-example candidates (several tokens each); and what one example of it holds.

Single-token tasks (BoolQ, CB, RTE, WiC, MultiRC, a YAML task) are scored by the logits of the
[MASK]'s prediction at the verbalizer ids; multi-token tasks (COPA, WSC, ReCoRD) by the summed
log-probability of each candidate infilled at the [MASK] (docs/design.md, "The two stages").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

from ..config.task import PatternPiece, parse_pattern

METRICS = ("accuracy", "f1_macro", "f1a", "em", "record_em", "record_f1", "wsc_accuracy")


@dataclass(frozen=True)
class ClozeExample:
    """One input of a task, read from one line of a data file.

    ``label`` is what the metrics compare with (an index into the task's labels; for COPA and
    ReCoRD the index of the right candidate); ``target`` is what training fits: the verbalizer index
    (single-token tasks) or the index of the right candidate; -1 where there is none (a test split,
    a WSC example whose span is not the referent, a ReCoRD question with no candidate among its
    answers). ``guid`` says where it came from (``FILE:LINE``, ``#k`` for the k-th of one line).
    """

    guid: str
    fields: Dict[str, str]
    label: int = -1
    target: int = -1
    candidates: Tuple[str, ...] = ()
    group: str = ""                               # MultiRC: the question an answer option belongs to
    answers: Tuple[str, ...] = ()                 # ReCoRD: the gold answer texts


@dataclass(frozen=True)
class ClozeTask:
    """A pattern-verbalizer pair (single-token) or a pattern with candidates (multi-token).

    ``verbalizer`` holds one word per label, in label order; empty for a multi-token task, whose
    examples carry their candidates. ``shorten`` names the fields that may be cut (from their end,
    the longest first) when an input does not fit. ``where`` locates each verbalizer word for
    error messages (``FILE:LINE: verbalizer.LABEL`` for a YAML task).
    """

    name: str
    pattern: Tuple[PatternPiece, ...]
    labels: Tuple[str, ...]
    verbalizer: Tuple[str, ...] = ()
    shorten: Tuple[str, ...] = ()
    metrics: Tuple[str, ...] = ("accuracy",)
    where: Tuple[str, ...] = field(default=())

    def __post_init__(self):
        if self.verbalizer and len(self.verbalizer) != len(self.labels):
            raise ValueError(f"task {self.name}: {len(self.verbalizer)} verbalizer words for {len(self.labels)} labels")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"task {self.name}: unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")

    @property
    def multi_token(self) -> bool:
        return not self.verbalizer

    @property
    def fields(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(p.value for p in self.pattern if p.kind == "field"))

    @property
    def answer_prefix(self) -> str:
        """A space when the pattern has whitespace right before [MASK]: it belongs to the answer, as
        GPT-2's BPE attaches a space to the word after it (GLM's verbalizers are " Yes", " No")."""
        i = next(k for k, p in enumerate(self.pattern) if p.kind == "mask")
        before = self.pattern[i - 1] if i else None
        return " " if before is not None and before.kind == "text" and before.value[-1].isspace() else ""

    def word_where(self, label_index: int) -> str:
        if label_index < len(self.where):
            return self.where[label_index]
        return f"task {self.name}: verbalizer.{self.labels[label_index]}"


def make_task(name: str, pattern: str, labels, verbalizer=(), shorten=(), metrics=("accuracy",),
              where=()) -> ClozeTask:
    """A task from a pattern string (``{field}`` placeholders, one [MASK]); ``verbalizer`` may be a
    sequence of words in label order or a mapping label -> word."""
    labels = tuple(labels)
    if isinstance(verbalizer, dict):
        missing = [label for label in labels if label not in verbalizer]
        if missing:
            raise ValueError(f"task {name}: verbalizer has no word for label {missing[0]!r}")
        verbalizer = tuple(verbalizer[label] for label in labels)
    return ClozeTask(name=name, pattern=parse_pattern(pattern, f"task {name}: pattern"), labels=labels,
                     verbalizer=tuple(verbalizer), shorten=tuple(shorten), metrics=tuple(metrics),
                     where=tuple(where))

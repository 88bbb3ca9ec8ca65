"""The one error type of checkpoint conversion: a message that starts with the offending file."""
from __future__ import annotations


class ConvertError(Exception):
    """A bad input or output of a conversion; ``str()`` is ``"<file>: <problem>"``.

    The tools print it as one ``error:`` line and exit non-zero, without a traceback.
    """

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

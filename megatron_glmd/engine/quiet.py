"""Quiet runs: DeepSpeed's internals stay out of a run's output unless ``logging.verbose`` asks.

A run prints its own lines (one per log interval, the evaluation, the save); DeepSpeed, set up by
the engine, adds lines of its own on every phase. Each is silenced where it comes from:

- DeepSpeed's logger (``"DeepSpeed"``, a handler on stdout): the accelerator warning it logs while
  ``deepspeed`` is imported, and its INFO/WARNING lines later. A filter on that logger, installed
  before DeepSpeed creates it (its ``create_logger`` keeps a logger's filters), passes only ERROR
  and above in a quiet run.
- ``print()`` on rank 0 inside ``deepspeed.init_distributed`` (the CPU shared-memory op "built
  successfully") and the ``PipelineModule`` constructor (``SEED_LAYERS=…``, ``Using topology: …``,
  ``stage=0 layers=1``, ``0: DistillStage``, ``loss: loss``): :func:`deepspeed_prints` captures
  stdout around exactly those calls, and writes what it captured to stderr if the call fails.
- DeepSpeed's calls of ``torch.distributed.all_gather_into_tensor`` / ``_all_gather_base`` (its
  ZeRO all-gather) warn that they are deprecated, a FutureWarning attributed to torch's
  ``c10d_logger``: a warnings filter for exactly those two messages from that module (the project
  calls ``all_gather_single``).

Errors reach stderr as before: raised exceptions, the project's ``error:`` lines, DeepSpeed's
ERROR records.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings

DEEPSPEED_LOGGER = "DeepSpeed"


class _QuietFilter(logging.Filter):
    """Passes every record of a verbose run, and ERROR and above of a quiet one."""

    verbose = False

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.ERROR


_FILTER = _QuietFilter()
_DEPRECATED_GATHER = r"`torch\.distributed\.(all_gather_into_tensor|_all_gather_base)` "
_WARNING_SOURCE = r"torch\.distributed\.c10d_logger$"


def set_verbose(verbose: bool) -> None:
    """DeepSpeed's log lines and deprecation warnings in (``verbose``) or out of this process's output.
    Takes effect for ``deepspeed``'s import-time warning too when called before its first import
    (importing this module installs the quiet default)."""
    logger = logging.getLogger(DEEPSPEED_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    _FILTER.verbose = verbose
    # The newest filter wins (an identical older one is replaced): quiet and verbose can alternate.
    warnings.filterwarnings("default" if verbose else "ignore", message=_DEPRECATED_GATHER, category=FutureWarning,
                            module=_WARNING_SOURCE)


def is_verbose() -> bool:
    return _FILTER.verbose


set_verbose(False)


@contextlib.contextmanager
def deepspeed_prints():
    """Around a DeepSpeed call that prints to stdout: in a quiet run the prints are captured (and
    written to stderr if the call raises, so a failure keeps its context); verbose, they pass."""
    if _FILTER.verbose:
        yield
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise

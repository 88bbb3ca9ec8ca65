"""Shared CLI plumbing: library errors become ``error: ...`` on stderr and exit status 1."""
from __future__ import annotations

import sys


def run(main_body) -> int:
    """Call ``main_body``; a library error (bad data, configuration or checkpoint) becomes one line."""
    from megatron_glmd.config import ConfigError
    from megatron_glmd.convert.errors import ConvertError
    from megatron_glmd.data.errors import DataError
    try:
        main_body()
    except (DataError, ConfigError, ConvertError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0

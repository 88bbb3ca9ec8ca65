#!/usr/bin/env python
"""Re-lay a megatron-glmd checkpoint out for another tensor/pipeline-parallel size.

    python tools/reshard_checkpoint.py --source runs/glm-10b-tp1 --output runs/glm-10b-tp4 --tp 4 --pp 1

A teacher saved (or converted) at one TP serves a distill run at another after this. Model weights
only, bit-identical; optimizer state is dropped (the tool says so), so the result is a teacher or
the source of an export, not a run to resume. On bad input prints one `error: <file>: <problem>`
line, exits 1 and leaves no output behind.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools._cli import run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="a megatron-glmd checkpoint folder (config.yaml, latest)")
    p.add_argument("--output", required=True, help="new folder (must not exist)")
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--tag", help="checkpoint tag to read (default: the one named by 'latest')")
    args = p.parse_args(argv)
    from megatron_glmd.convert.reshard import reshard_checkpoint
    return run(lambda: print(reshard_checkpoint(args.source, args.output, args.tp, args.pp, args.tag)))


if __name__ == "__main__":
    sys.exit(main())

"""Part 1 of `gpu_check.sh`: refuse at once, in one line, on a machine that cannot run the check.

    python -m kernels.benchmarks.gpu_check_env --out OUT_DIR/env.json

Needs `torch.cuda.is_available()` and an importable triton (the kernels' GPU path). Otherwise it
prints `error: gpu_check: <why>` and exits 2 before writing anything, and the script stops there.
On success it writes the versions, the device and the HBM peak the bandwidth part will assume.
"""
from __future__ import annotations

import argparse
import os
import sys


def refusal() -> str | None:
    """The reason this machine cannot run the GPU check, or None."""
    import torch
    if not torch.cuda.is_available():
        return (f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): "
                "this check needs a CUDA GPU")
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton does not import ({type(e).__name__}: {e}): the kernels' GPU path needs it"
    return None


def environment() -> dict:
    import torch
    import triton

    from .gpu_check_common import hbm_peak
    props = torch.cuda.get_device_properties(0)
    peak, assumed = hbm_peak(props.name)
    return {"status": "ok", "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "device": props.name,
            "capability": f"{props.major}.{props.minor}", "memory_gib": props.total_memory / 2 ** 30,
            "multiprocessors": props.multi_processor_count, "hbm_peak_bytes_per_s": peak,
            "hbm_peak_assumed": assumed,
            "headline": {"device": props.name, "torch": torch.__version__, "triton": triton.__version__}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    why = refusal()
    if why is not None:
        print(f"error: gpu_check: {why}", file=sys.stderr)
        return 2
    from .gpu_check_common import write_json
    env = environment()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out, {"part": "env", **env})
    print(f"{env['device']} (sm_{env['capability'].replace('.', '')}, {env['memory_gib']:.0f} GiB), "
          f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; {env['hbm_peak_assumed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

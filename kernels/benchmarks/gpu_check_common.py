"""What the parts of `gpu_check.sh` share: the HBM peak table and the part runner.

Each part is `python -m kernels.benchmarks.gpu_check_<part> --out OUT.json`, run by the shell
script under its own `timeout`: a part that hangs or crashes (a CUDA fault kills the process) costs
only itself, and the next part starts in a fresh process with a fresh CUDA context. A part's body
returns a dict with `status` ("ok" or "failed"), `headline` (the few numbers summary.json quotes)
and whatever detail it has; an exception becomes status "failed" with its traceback. The JSON is
written atomically, so a part killed by its timeout leaves no half-written file (the summary then
reports the timeout from the exit status).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from typing import Callable, Optional, Tuple

from megatron_glmd.atomic_io import atomic_write_text

# HBM peak in bytes/s by a fragment of torch.cuda.get_device_name(), first match wins (so the more
# specific names come first). Vendor data sheets: H200 4.8 TB/s; H100 SXM 3.35, NVL 3.9, PCIe 2.0;
# A100 80GB SXM 2.039, 80GB PCIe 1.935, 40GB 1.555; "A100" alone is taken as 2.0.
HBM_PEAK = (("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
            ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12), ("A100-SXM4-40GB", 1.555e12),
            ("A100-PCIE-40GB", 1.555e12), ("A100", 2.0e12))


def hbm_peak(device_name: str) -> Tuple[Optional[float], str]:
    """(bytes/s or None, what was assumed, in words) for a CUDA device name."""
    for fragment, peak in HBM_PEAK:
        if fragment.lower() in device_name.lower():
            return peak, f"HBM peak {peak / 1e12:.3f} TB/s assumed for {device_name!r} (matched {fragment!r})"
    return None, f"no HBM peak known for {device_name!r}: bandwidth in GB/s only, no fraction of peak"


def _finite(value):
    """JSON without NaN/inf tokens (which strict parsers refuse): they become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(_finite(obj), indent=1) + "\n")


def part_main(name: str, body: Callable[[argparse.Namespace], dict], argv=None,
              configure: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> int:
    """Run one part: parse `--out`, call `body(args)`, write its JSON; exit 0 only when "ok"."""
    parser = argparse.ArgumentParser(description=f"gpu_check part {name!r}")
    parser.add_argument("--out", required=True, help="the part's JSON file")
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    try:
        result = body(args)
    except Exception:  # noqa: BLE001 - the part reports its failure; the script goes on
        result = {"status": "failed", "error": traceback.format_exc()}
        print(result["error"], file=sys.stderr, flush=True)
    result = {"part": name, **result}
    write_json(args.out, result)
    print(f"{name}: {result['status']}", flush=True)
    return 0 if result["status"] in ("ok", "not run") else 1

"""Last step of `gpu_check.sh`: OUT_DIR/summary.json from the parts' JSON files and exit statuses.

    python -m kernels.benchmarks.gpu_check_summary OUT_DIR PART=EXIT_STATUS ...

A part is "ok" when it exited 0 and its JSON says "ok" (the engine smoke run's JSON has no status:
its exit status decides); "not run" when it exited 0 and says so (a feature the check codes
against is absent, e.g. `model.compile`); "timed out" when `timeout` killed it (124, or 137 after
the kill signal), with whatever it wrote before; "failed" otherwise, also when it wrote no JSON.
Each entry carries the part's `headline` numbers. Exits 1 when any part failed or timed out.
"""
from __future__ import annotations

import json
import os
import sys

TIMEOUT_STATUSES = (124, 137)


def _engine_smoke_headline(data: dict) -> dict:
    return {r["phase"]: {"ok": r.get("ok"), "iterations": len(r.get("losses", [])),
                         "loss_first": (r.get("losses") or [None])[0], "loss_last": (r.get("losses") or [None])[-1],
                         "seconds": r.get("seconds")} for r in data.get("results", [])}


def part_entry(out_dir: str, name: str, rc: int) -> dict:
    path = os.path.join(out_dir, f"{name}.json")
    entry = {"exit_status": rc, "json": f"{name}.json" if os.path.exists(path) else None}
    data = None
    if entry["json"]:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            entry["note"] = f"unreadable JSON: {e}"
    reported = data.get("status") if isinstance(data, dict) else None
    if isinstance(data, dict):
        entry["headline"] = data.get("headline") or (_engine_smoke_headline(data) if "results" in data else {})
        if data.get("note"):
            entry["note"] = data["note"]
    if rc in TIMEOUT_STATUSES:
        entry["status"] = "timed out"
    elif rc == 0 and reported == "not run":
        entry["status"] = "not run"
    elif rc == 0 and data is not None and reported in ("ok", None):
        entry["status"] = "ok"
    else:
        entry["status"] = "failed"
        if data is None and "note" not in entry:
            entry["note"] = f"no JSON written (exit status {rc}); see {name}.log"
    return entry


def summarize(out_dir: str, statuses: dict) -> dict:
    parts = {name: part_entry(out_dir, name, rc) for name, rc in statuses.items()}
    bad = [n for n, p in parts.items() if p["status"] in ("failed", "timed out")]
    return {"status": "failed" if bad else "ok", "failed": bad,
            "not_run": [n for n, p in parts.items() if p["status"] == "not run"], "parts": parts}


def parse_statuses(items) -> dict:
    out = {}
    for item in items:
        name, sep, rc = item.partition("=")
        if not sep or not name or not rc.lstrip("-").isdigit():
            raise ValueError(f"{item!r}: expected PART=EXIT_STATUS")
        out[name] = int(rc)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("error: usage: gpu_check_summary OUT_DIR PART=EXIT_STATUS ...", file=sys.stderr)
        return 2
    try:
        statuses = parse_statuses(argv[1:])
    except ValueError as e:
        print(f"error: gpu_check_summary: {e}", file=sys.stderr)
        return 2
    from kernels.benchmarks.gpu_check_common import write_json
    summary = summarize(argv[0], statuses)
    write_json(os.path.join(argv[0], "summary.json"), summary)
    for name, p in summary["parts"].items():
        print(f"{p['status']:9s} {name:15s} {json.dumps(p.get('headline', {}))[:200]}")
    print(f"gpu_check: {summary['status']}" + (f" ({', '.join(summary['failed'])})" if summary["failed"] else ""))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

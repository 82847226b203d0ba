"""Print the demo's verification summary and training metrics (scripts/demo.sh, last stage).

Reads the newest verify report of the host under REPORTS/<timestamp>/<host>.json (playbooks/verify.yml)
and every <run>/metrics.json under METRICS (playbooks/train.yml).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"demo summary: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SystemExit(f"demo summary: {path} holds {type(data).__name__}, not a JSON object")
    return data


def newest_report(reports: Path, host: str) -> Path | None:
    """The host's report in the newest run directory verify.yml made (named like 20261123T221500Z)."""
    runs = sorted(p for p in reports.glob(f"*/{host}.json") if re.fullmatch(r"\d{8}T\d{6}Z", p.parent.name))
    return runs[-1] if runs else None


# The lab's services, shown whatever their status; other checks only when they WARN or FAIL.
SERVICES = ("services.docker", "services.jupyter", "services.firewall")


def print_report(path: Path) -> None:
    report = _load(path)
    summary = report.get("summary", {})
    counts = summary.get("counts", {})
    print(f"verification (level {report.get('level')}): {summary.get('status')}  ", end="")
    print("  ".join(f"{k} {v}" for k, v in counts.items()), f"  [{path}]")
    for check in report.get("checks", []):
        if check.get("status") in ("FAIL", "WARN") or check.get("id") in SERVICES:
            print(f"  {check['status']:4}  {check['id']}: {check.get('message', '')}")


def print_metrics(path: Path) -> None:
    m = _load(path)
    print(f"training run {path.parent.name}: {m.get('status')}  [{path}]")
    rows = [
        ("loss", f"{m.get('initial_loss', 0):.4f} -> {m.get('final_loss', 0):.4f}"),
        ("steps", m.get("global_step")),
        ("examples", m.get("examples")),
        ("trainable / total parameters", f"{m.get('trainable_parameters')} / {m.get('total_parameters')}"),
        ("tokens/s", f"{m.get('tokens_per_second', 0):.1f}"),
        ("padding efficiency", m.get("padding_efficiency")),
        ("device, precision, world size", f"{m.get('device')}, {m.get('precision')}, {m.get('world_size')}"),
        ("wall time (s)", m.get("wall_time_seconds")),
    ]
    for key, value in rows:
        print(f"  {key:30} {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=Path, required=True, help="directory of the verify reports")
    parser.add_argument("--metrics", type=Path, required=True, help="directory of <run>/metrics.json")
    parser.add_argument("--host", required=True, help="inventory name of the demo host")
    args = parser.parse_args(argv)
    print("\n=== summary")
    report = newest_report(args.reports, args.host)
    if report is None:
        print(f"demo summary: no verify report for {args.host} under {args.reports}", file=sys.stderr)
        return 1
    print_report(report)
    runs = sorted(args.metrics.glob("*/metrics.json"))
    if not runs:
        print(f"demo summary: no metrics.json under {args.metrics}", file=sys.stderr)
        return 1
    for path in runs:
        print_metrics(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m deploys`: the command line. One sub-command per day-2 operation.

Exit codes: 0 every host passed; 1 a host failed (verify: a FAIL or could not run; deploy or sync: an
error, or a host that cannot be reached); 2 bad input (inventory, host pattern, source, manifest).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deploys.inventory import DeployError, load_targets

if TYPE_CHECKING:
    from deploys.ops import HostResult

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INVENTORY = REPO / "inventory" / "local" / "hosts.yml"
EXIT_OK, EXIT_HOST_FAILED, EXIT_USAGE = 0, 1, 2


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-i",
        "--inventory",
        type=Path,
        default=DEFAULT_INVENTORY,
        help="Ansible inventory file or directory, as for the playbooks (default: inventory/local/hosts.yml)",
    )
    common.add_argument(
        "-l", "--limit", default="all", metavar="PATTERN", help="Ansible host pattern (default: all)"
    )
    common.add_argument("--json", action="store_true", help="print the per-host results as JSON")

    parser = argparse.ArgumentParser(
        prog="python -m deploys",
        description="Day-2 operations with pyinfra on hosts provisioned by playbooks/site.yml.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser(
        "deploy",
        parents=[common],
        help="build the llmlab wheel from a checkout and install it into the lab environment",
    )
    p.add_argument("--source", type=Path, default=REPO, help="llmlab checkout (default: this one)")
    p = actions.add_parser("verify", parents=[common], help="run `llmlab verify --json`; fail on FAIL")
    p.add_argument("--level", type=int, choices=(1, 2, 3), default=1, help="verification level (default 1)")
    p.add_argument("--only", type=_names, default=[], metavar="LIST", help="categories or check ids")
    p.add_argument("--skip", type=_names, default=[], metavar="LIST", help="categories or check ids")
    p.add_argument(
        "--report-dir",
        type=Path,
        metavar="DIR",
        help="also save each host's JSON report as DIR/<host>.json (as playbooks/verify.yml does)",
    )
    p = actions.add_parser(
        "models-sync", parents=[common], help="upload MANIFEST.yaml and run `llmlab models sync` on it"
    )
    p.add_argument("manifest", type=Path, metavar="MANIFEST.yaml")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deploys import ops

    try:
        targets = load_targets(args.inventory, args.limit)
        if args.action == "deploy":
            results = ops.deploy(targets, args.source)
        elif args.action == "verify":
            results = ops.verify(targets, args.level, args.only, args.skip)
        else:
            results = ops.models_sync(targets, args.manifest)
    except DeployError as exc:
        print(f"deploys {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "report_dir", None):
        _save_reports(args.report_dir, results)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, default=str))
    else:
        _table(args.action, results)
    return EXIT_OK if all(r.ok for r in results) else EXIT_HOST_FAILED


def _save_reports(directory: Path, results: list[HostResult]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for r in results:
        if r.report is not None:
            (directory / f"{r.host}.json").write_text(json.dumps(r.report, indent=2) + "\n", encoding="utf-8")


def _table(action: str, results: list[HostResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("host", "status", "failing checks" if action == "verify" else "changed", "detail", box=None)
    colours = {"OK": "green", "unchanged": "green", "changed": "yellow", "WARN": "yellow"}
    for r in results:
        third = ", ".join(r.failing) if action == "verify" else ("yes" if r.changed else "no")
        colour = colours.get(r.status, "red")
        table.add_row(r.host, f"[{colour}]{r.status}[/]", third or "-", r.detail)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    failed = sum(not r.ok for r in results)
    changed = sum(r.changed for r in results)
    console.print(f"{action}: {len(results)} hosts, {changed} changed, {failed} failed")

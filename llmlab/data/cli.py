"""`llmlab data check CONFIG.yaml`. Imports only the standard library and llmlab.config at import time.

Exit codes: 0 nothing blocks training; 1 format errors (training would stop at the first), or with
`--strict` duplicates, empty answers or evaluation examples leaked from training; 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llmlab.config import load_config

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect the datasets of a training config")
    verbs = data.add_subparsers(dest="data_command", metavar="VERB", required=True)
    check = verbs.add_parser(
        "check",
        help="rows, format errors, duplicates, empty answers, leakage, token lengths of a training config",
        description="Check the datasets (and eval_datasets) of CONFIG.yaml with its tokenizer and "
        "sequence_len; `key=value` arguments override config keys as for `llmlab train`.",
    )
    check.add_argument("config_file", metavar="CONFIG.yaml", help="training config")
    check.add_argument("overrides", metavar="key=value", nargs="*", help="override a config key")
    check.add_argument("--json", action="store_true", help="machine-readable output (llmlab.data.check/1)")
    check.add_argument(
        "--strict", action="store_true", help="exit 1 on duplicates, empty answers or train/eval leakage"
    )
    check.set_defaults(handler=run_check, config_error_exit=EXIT_USAGE)


def run_check(args: argparse.Namespace) -> int:
    from llmlab.data.check import check_datasets
    from llmlab.train.modeling import load_tokenizer, resolve_base_model
    from llmlab.train.schema import load_train_config

    cfg = load_train_config(Path(args.config_file), args.overrides)
    tokenizer = load_tokenizer(resolve_base_model(cfg.base_model, load_config(args.config)).path)
    report = check_datasets(cfg, tokenizer)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    found = report["problems"]
    if found["format_errors"]:
        return 1
    strict_failures = found["duplicates"] + found["empty"] + found["leaked"]
    return 1 if args.strict and strict_failures else 0


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    seq = report["sequence_len"]
    table = Table(title=f"Datasets, tokenized for sequence_len={seq} (too_long: {report['too_long_action']})")
    columns = ("file", "role", "rows", "errors", "empty", "dup", "dup norm", f"> {seq}")
    for column in (*columns, "min", "p50", "p95", "max", "tokens"):
        table.add_column(column, justify="left" if column in ("file", "role") else "right")

    def cells(entry: dict[str, Any]) -> list[str]:
        tokens = entry["tokens"]
        counts = ("rows", "format_errors", "empty", "duplicates", "normalised_duplicates", "too_long")
        return [
            *(f"{entry[key]:,}" for key in counts),
            *("—" if tokens[key] is None else f"{tokens[key]:,}" for key in ("min", "p50", "p95", "max")),
            f"{tokens['total']:,}",
        ]

    for entry in report["datasets"]:
        table.add_row(Path(entry["path"]).name, entry["role"], *cells(entry))
    table.add_row("[bold]all training files[/]", "train", *cells(report["total"]))
    console.print(table)
    for entry in report["datasets"]:
        for error in entry["errors"]:
            console.print(f"[red]format error[/] {error}", highlight=False)
        hidden = entry["format_errors"] - len(entry["errors"])
        if hidden:
            console.print(f"[red]... and {hidden} more format errors in {entry['path']}[/]", highlight=False)
    split = report["split"]
    efficiency = report["packing_efficiency"]
    console.print(
        f"split: {split['train']:,} train, {split['eval_split']:,} eval_split, {split['eval_datasets']:,} "
        f"from eval_datasets; {split['dropped_too_long']:,} dropped and {split['truncated']:,} truncated "
        f"as longer than {seq}; {report['train_tokens']:,} tokens per epoch; "
        f"expected padding efficiency {'—' if efficiency is None else f'{efficiency:.1%}'} "
        f"({'packed' if report['packing'] else 'not packed'})",
        highlight=False,
    )
    leak_style = "red" if report["leaked"] else "green"
    console.print(
        f"[{leak_style}]leaked: {report['leaked']:,} evaluation examples also in training[/] "
        f"({report['leaked_normalised']:,} after normalising case, punctuation and spaces)",
        highlight=False,
    )

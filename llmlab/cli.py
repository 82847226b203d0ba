"""The `llmlab` entry point. Sub-commands live in their packages and register themselves here.

Each module in SUBCOMMANDS has `register(subparsers)`, which adds a parser whose `handler(args) -> int`
runs the command. Those modules import only the standard library and llmlab.config at import time, so
`llmlab --help` stays fast; torch and transformers are imported inside the handlers that need them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from llmlab import __version__
from llmlab.config import ConfigError

SUBCOMMANDS: tuple[str, ...] = (
    "llmlab.config_cli",
    "llmlab.data.cli",
    "llmlab.models.cli",
    "llmlab.train.cli",
    "llmlab.train.generate_cli",
    "llmlab.verify.cli",
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmlab",
        description="Provision GPU servers for LLM work, and prove they work.",
    )
    parser.add_argument("--version", action="version", version=f"llmlab {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="host config (default: $LLMLAB_CONFIG or /etc/llmlab/config.yaml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args))
    except ConfigError as exc:
        print(f"llmlab: configuration error:\n{exc}", file=sys.stderr)
        return getattr(args, "config_error_exit", EXIT_USAGE)
    except KeyboardInterrupt:
        print("llmlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

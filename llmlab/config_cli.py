"""`llmlab config`: the merged host config (config.yaml, the roles' contracts) and where each key came from.

The llmlab role runs it after writing config.yaml, so a bad contract fails the play naming its file and key.
"""

from __future__ import annotations

import argparse
import json

from llmlab.config import load_config

EXIT_BAD_CONFIG = 3
SCHEMA = "llmlab.config/1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show the merged host config and which file set each key (exit 3 if it is invalid)",
        description=(
            "Merge config.yaml with every config.d/*.yaml beside it (name order: mappings merge, a later "
            "scalar or list replaces an earlier one), validate every section, and print the result."
        ),
    )
    parser.add_argument("--json", action="store_true", help=f"print JSON ({SCHEMA})")
    parser.set_defaults(handler=run, config_error_exit=EXIT_BAD_CONFIG)


def run(args: argparse.Namespace) -> int:
    from llmlab.verify.settings import verify_settings

    config = load_config(args.config)
    settings = verify_settings(config)
    merged = config.model_dump(mode="json") | {"verify": settings.model_dump(mode="json")}
    origins = {".".join(key): str(path) for key, path in sorted(config.origins.items())}
    if args.json:
        files = [str(f) for f in config.files]
        print(json.dumps({"schema": SCHEMA, "files": files, "config": merged, "origins": origins}, indent=2))
        return 0
    import yaml

    print("# merged from: " + (", ".join(map(str, config.files)) or "(defaults only)"))
    for key, path in origins.items():
        print(f"#   {key}: {path}")
    print(yaml.safe_dump(merged, sort_keys=True), end="")
    return 0

"""`llmlab verify`: the sub-command. At import time only the standard library and llmlab.config load."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from llmlab.config import ConfigError, HostConfig, config_path, load_config

EXIT_COULD_NOT_RUN = 3
TEXTFILE_NAME = "llmlab_verify.prom"
TEXTFILE_IN_CONFIG = Path("(textfile_dir)")


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check that this host is what the inventory says, and healthy",
        description=(
            "Check this host against its config (/etc/llmlab/config.yaml and the roles' contracts in "
            "config.d/, `verify:` section). "
            "Exit 0: all OK/SKIP, 1: a WARN, 2: a FAIL, 3: could not run (bad config or arguments)."
        ),
    )
    parser.add_argument(
        "--level",
        default="1",
        metavar="{1,2,3}",
        help="1: quick checks (seconds); 2: adds GPU probes and a training smoke; 3: longer probes",
    )
    parser.add_argument(
        "--only", type=_names, default=[], metavar="LIST", help="comma-separated categories or ids"
    )
    parser.add_argument(
        "--skip", type=_names, default=[], metavar="LIST", help="comma-separated categories or ids"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the versioned JSON report instead of the table"
    )
    parser.add_argument(
        "--prometheus-textfile",
        type=Path,
        nargs="?",
        const=TEXTFILE_IN_CONFIG,
        metavar="PATH",
        help="also write metrics for node_exporter's textfile collector (atomically); without PATH, "
        f"{TEXTFILE_NAME} in the host config's textfile_dir",
    )
    parser.add_argument(
        "--pass-codes",
        default="0,1",
        metavar="LIST",
        help="exit codes that pass, for the report's summary.passed (default 0,1: WARN passes; 0: it fails)",
    )
    parser.add_argument("--list", action="store_true", help="list the check catalogue and exit")
    slurm = parser.add_argument_group("Slurm node health check (HealthCheckProgram, prolog)")
    slurm.add_argument(
        "--slurm-health",
        action="store_true",
        help="run the quick health subset (unless --only) and drain this node on FAIL with the reason "
        "'llmlab: <check ids>'; resume it when the checks pass, only if llmlab drained it. Writes "
        "<reports_dir>/slurm-health.json and <textfile_dir>/llmlab_slurm_health.prom",
    )
    slurm.add_argument(
        "--slurm-node",
        metavar="NAME",
        help="the Slurm node name (default $SLURMD_NODENAME, else the host name)",
    )
    slurm.add_argument(
        "--slurm-prolog", action="store_true", help="exit 1 on FAIL (Slurm then requeues the job), else 0"
    )
    parser.set_defaults(handler=run, config_error_exit=EXIT_COULD_NOT_RUN)


def _may_run(category: str, only: list[str], skip: list[str]) -> bool:
    """Whether --only/--skip leave any check of `category` in (a cheap guess; the runner decides)."""
    if category in skip:
        return False
    return not only or any(name == category or name.startswith(category + ".") for name in only)


def _pass_codes(text: str) -> tuple[int, ...]:
    codes = _names(text)
    if not codes or any(code not in ("0", "1", "2") for code in codes):
        raise ConfigError(
            f"--pass-codes: {text!r} is not a list of exit codes that can pass; valid: 0, 1, 2 (e.g. 0,1)"
        )
    return tuple(sorted({int(code) for code in codes}))


def run(args: argparse.Namespace) -> int:
    if args.list:
        from llmlab.verify.runner import catalogue

        for c in catalogue():
            print(f"{c.id:28} level {c.level}  {c.description}")
        return 0
    start = time.perf_counter()
    # Validated here rather than by argparse, whose errors exit 2 - which means FAIL to a caller.
    if args.level not in ("1", "2", "3"):
        raise ConfigError(f"--level: {args.level!r} is not a level; valid: 1, 2, 3")
    level = int(args.level)
    pass_codes = _pass_codes(args.pass_codes)
    config = load_config(args.config)  # ConfigError -> exit 3 before anything runs

    from llmlab.verify.context import VerifyContext, real_sources

    ctx = VerifyContext(config=config, sources=real_sources(config), level=level)
    ctx.settings  # noqa: B018 - validates the verify section now: a bad key exits 3 before any check
    if _may_run("software", args.only, args.skip):
        from llmlab.verify.lab import prefetch

        prefetch(ctx)  # the probe's torch import overlaps loading the catalogue and the quick checks

    from llmlab.atomic import atomic_write
    from llmlab.verify.report import prometheus_text, render_table, to_json
    from llmlab.verify.result import exit_code
    from llmlab.verify.runner import run_checks, select

    slurm_health = getattr(args, "slurm_health", False)
    if slurm_health:
        from llmlab.verify.slurm_health import HEALTH_CHECKS

        args.only = args.only or list(HEALTH_CHECKS)
    checks = select(level, args.only, args.skip)
    results = run_checks(ctx, checks)
    duration = time.perf_counter() - start
    if slurm_health:
        return _slurm_health(args, ctx, config, results, duration)
    if args.json:
        selection = {"only": args.only, "skip": args.skip}
        report = to_json(results, ctx, str(config_path(args.config)), duration, selection, pass_codes)
        print(json.dumps(report, indent=2, default=str))
    else:
        from rich.console import Console

        render_table(results, duration, level, Console(width=None if sys.stdout.isatty() else 160))
    if args.prometheus_textfile:
        textfile = args.prometheus_textfile
        if textfile == TEXTFILE_IN_CONFIG:
            textfile = config.textfile_dir / TEXTFILE_NAME
        try:
            textfile.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(textfile, prometheus_text(results, duration))
        except OSError as exc:
            print(f"llmlab verify: cannot write {textfile}: {exc}", file=sys.stderr)
            return EXIT_COULD_NOT_RUN
    return exit_code(results)


def _slurm_health(
    args: argparse.Namespace, ctx: Any, config: HostConfig, results: list[Any], duration: float
) -> int:
    """Drain or resume this node from the results; write the JSON report and the metrics like the timer."""
    from llmlab.atomic import atomic_write
    from llmlab.verify import slurm_health as sh
    from llmlab.verify.report import prometheus_text, to_json
    from llmlab.verify.result import EXIT_FAIL, EXIT_OK, Status

    node = args.slurm_node or sh.default_node_name(dict(os.environ))
    selection = {"only": args.only, "skip": args.skip}
    report = to_json(results, ctx, str(config_path(args.config)), duration, selection)
    failed = any(r.status == Status.FAIL for r in results)
    code = EXIT_FAIL if failed else EXIT_OK
    try:
        report["slurm"] = sh.apply(ctx.sources.runner, node, results)
        report["slurm"]["trigger"] = "prolog" if args.slurm_prolog else "health_check"
    except (sh.SlurmError, ValueError) as exc:
        report["slurm"] = {"node": node, "action": "error", "error": str(exc)}
        print(f"llmlab verify --slurm-health: {exc}", file=sys.stderr)
        code = EXIT_COULD_NOT_RUN
    text = json.dumps(report, indent=2, default=str)
    outputs = [
        (config.reports_dir / "slurm-health.json", text + "\n"),
        (
            config.textfile_dir / "llmlab_slurm_health.prom",
            sh.prometheus_prefixed(prometheus_text(results, duration)),
        ),
    ]
    for path, content in outputs:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, content)
        except OSError as exc:
            print(f"llmlab verify --slurm-health: cannot write {path}: {exc}", file=sys.stderr)
    if args.json:
        print(text)
    if args.slurm_prolog:
        return 1 if failed else 0
    return code

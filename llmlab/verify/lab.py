"""The lab environment as its own python sees it: one run of lab_probe.py per verify run, shared by checks,
and none while the environment is unchanged since an earlier run (lab_answers).

`prefetch` starts that run in the background as soon as the config is known, because the probe's torch import
(seconds) is the longest part of level 1 and need not wait for the check catalogue to load.
"""

from __future__ import annotations

import json
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llmlab.verify.lab_probe as lab_probe
from llmlab.verify.context import VerifyContext
from llmlab.verify.sources import CommandResult


class LabProbeError(RuntimeError):
    pass


@dataclass(frozen=True)
class LabReport:
    python: str
    packages: dict[str, str | None]
    torch: dict[str, Any] | None
    torch_error: str | None


def lab_python(ctx: VerifyContext) -> str:
    if ctx.settings.lab_python:
        return str(ctx.settings.lab_python)
    return str(ctx.config.lab_env / "bin" / "python") if ctx.config.lab_env else sys.executable


def lab_report(ctx: VerifyContext) -> LabReport:
    """What the lab python reports (run once per verify run); raises LabProbeError if it cannot run."""

    def run() -> LabReport:
        # Passed as -c source, not a script path: the script's directory would shadow modules on sys.path.
        source = Path(lab_probe.__file__).read_text(encoding="utf-8")
        argv = [lab_python(ctx), "-c", source, *sorted(ctx.settings.min_versions)]
        data = _probe_answer(ctx, argv)
        try:
            return LabReport(data["python"], data["packages"], data["torch"], data["torch_error"])
        except KeyError as exc:
            raise LabProbeError(f"{argv[0]}: unreadable probe output (no {exc})") from None

    return ctx.once("lab_report", run)


def lab_command(ctx: VerifyContext, argv: list[str]) -> CommandResult:
    """Run a command of the lab python whose answer depends only on the environment (the probe, `pip check`);
    while the environment is unchanged, the answer kept from an earlier run (lab_answers)."""
    answers = ctx.sources.lab_answers
    key = answers.key(argv) if answers else None
    if answers and key and (kept := answers.load(key)) is not None:
        return kept
    result = ctx.sources.runner.run(argv, timeout=ctx.timeout)
    if answers and key and result.returncode in (0, 1):  # not a timeout (124) or a missing python (127)
        answers.store(key, result)
    return result


def _probe_answer(ctx: VerifyContext, argv: list[str]) -> dict[str, Any]:
    result = lab_command(ctx, argv)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise LabProbeError(f"{argv[0]} could not run the probe: {detail}")
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise LabProbeError(f"{argv[0]}: unreadable probe output ({exc})") from None
    if not isinstance(data, dict):
        raise LabProbeError(f"{argv[0]}: unreadable probe output (not a JSON object)")
    return data


def prefetch(ctx: VerifyContext) -> None:
    """Start the probe in a daemon thread; the checks later get its memoised report (or its error)."""

    def run() -> None:
        with suppress(Exception):  # memoised by ctx.once: the software checks report it
            lab_report(ctx)

    threading.Thread(target=run, name="verify-lab-probe", daemon=True).start()

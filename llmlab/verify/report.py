"""The outputs: a rich table for people, versioned JSON for Ansible, a textfile for node_exporter."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from llmlab import __version__
from llmlab.verify.context import VerifyContext
from llmlab.verify.nvml import NvmlUnavailable
from llmlab.verify.result import EXIT_OK, EXIT_WARN, CheckResult, Status, exit_code, worst

SCHEMA = "llmlab.verify.report"
SCHEMA_VERSION = 1
# The exit codes a host passes with unless the caller says otherwise: a WARN is worth a look, not a failed
# host. 2 (FAIL) may be added; 3 (could not run) never passes, as it prints no report.
DEFAULT_PASS_CODES: tuple[int, ...] = (EXIT_OK, EXIT_WARN)


def passed(results: list[CheckResult], pass_codes: tuple[int, ...] = DEFAULT_PASS_CODES) -> bool:
    """The verdict on a host: whether its exit code is one that passes. The report carries it as
    `summary.passed`, and every consumer reads that field instead of deciding again: the llmlab role's
    tasks_from verify, playbooks/verify.yml and deploys' verify."""
    return exit_code(results) in pass_codes


def host_facts(ctx: VerifyContext) -> dict[str, Any]:
    facts = ctx.once("host_facts", ctx.sources.host.facts)
    host: dict[str, Any] = {
        "hostname": facts.hostname,
        "os": facts.os_name,
        "kernel": facts.kernel,
        "cpu_count": facts.cpu_count,
        "memory_bytes": facts.memory_bytes,
        "driver_version": None,
        "gpus": [],
        "nvml_error": None,
    }
    try:
        snapshot = ctx.nvml()
    except NvmlUnavailable as exc:
        host["nvml_error"] = str(exc)
        return host
    host["driver_version"] = snapshot.driver_version
    host["gpus"] = [
        {"index": g.index, "name": g.name, "uuid": g.uuid, "pci_bus_id": g.pci_bus_id}
        for g in snapshot.devices
    ]
    return host


def counts(results: list[CheckResult]) -> dict[str, int]:
    tally = Counter(r.status.value for r in results)
    return {s.value: tally.get(s.value, 0) for s in Status}


def to_json(
    results: list[CheckResult],
    ctx: VerifyContext,
    config_path: str,
    duration_s: float,
    selection: dict,
    pass_codes: tuple[int, ...] = DEFAULT_PASS_CODES,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "llmlab_version": __version__,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_path": config_path,
        "level": ctx.level,
        "selection": selection,
        "host": host_facts(ctx),
        "summary": {
            "status": worst(results).value,
            "exit_code": exit_code(results),
            "passed": passed(results, pass_codes),
            "pass_codes": list(pass_codes),
            "counts": counts(results),
            "duration_s": round(duration_s, 3),
        },
        "checks": [
            {
                "id": r.id,
                "category": r.category,
                "level": r.level,
                "status": r.status.value,
                "message": r.message,
                "value": r.value,
                "expected": r.expected,
                "unit": r.unit,
                "hint": r.hint,
                "items": r.items,
                "duration_s": r.duration_s,
            }
            for r in results
        ],
    }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def prometheus_text(results: list[CheckResult], duration_s: float, now: float | None = None) -> str:
    """node_exporter textfile format: a state-set gauge per check status, a gauge per numeric reading."""
    lines = [
        "# HELP llmlab_verify_check_status 1 for the check's current status, 0 for the others.",
        "# TYPE llmlab_verify_check_status gauge",
    ]
    for r in results:
        for s in Status:
            labels = f'check="{_label(r.id)}",category="{r.category}",status="{s.value.lower()}"'
            lines.append(f"llmlab_verify_check_status{{{labels}}} {1 if r.status == s else 0}")
    lines += [
        "# HELP llmlab_verify_check_value What the check measured (numeric readings; item names a GPU etc.).",
        "# TYPE llmlab_verify_check_value gauge",
    ]
    for r in results:
        readings = {"": r.value} | dict(r.items)
        for item, value in readings.items():
            number = _number(value)
            if number is not None:
                labels = f'check="{_label(r.id)}",item="{_label(item)}",unit="{_label(r.unit or "")}"'
                lines.append(f"llmlab_verify_check_value{{{labels}}} {number:g}")
    lines += [
        "# HELP llmlab_verify_exit_code Exit code of the last run: 0 ok, 1 warn, 2 fail.",
        "# TYPE llmlab_verify_exit_code gauge",
        f"llmlab_verify_exit_code {exit_code(results)}",
        "# HELP llmlab_verify_duration_seconds Wall time of the last run.",
        "# TYPE llmlab_verify_duration_seconds gauge",
        f"llmlab_verify_duration_seconds {duration_s:.3f}",
        "# HELP llmlab_verify_last_run_timestamp_seconds When the last run finished (Unix time).",
        "# TYPE llmlab_verify_last_run_timestamp_seconds gauge",
        f"llmlab_verify_last_run_timestamp_seconds {time.time() if now is None else now:.0f}",
    ]
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


STYLE = {Status.FAIL: "bold red", Status.WARN: "yellow", Status.OK: "green", Status.SKIP: "dim"}


def render_table(results: list[CheckResult], duration_s: float, level: int, console: Any) -> None:
    """FAIL first, then WARN, OK, SKIP; the hint column only has text where something is wrong."""
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold", expand=False)
    table.add_column("Status", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Result")
    table.add_column("Expected")
    table.add_column("Fix")
    ranked = sorted(results, key=lambda r: -r.status.severity)
    for r in ranked:
        expected = _shown(r.expected)
        hint = r.hint if r.status in (Status.FAIL, Status.WARN) else ""
        table.add_row(f"[{STYLE[r.status]}]{r.status.value}[/]", r.id, r.message, expected, hint)
    console.print(table)
    tally = counts(results)
    overall = worst(results)
    console.print(
        f"[{STYLE[overall]}]{overall.value}[/]: {tally['FAIL']} fail, {tally['WARN']} warn, "
        f"{tally['OK']} ok, {tally['SKIP']} skip - level {level}, {duration_s:.1f} s"
    )

"""What a check reports, the check registry, and how statuses rank and map to exit codes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmlab.verify.context import VerifyContext


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"

    @property
    def severity(self) -> int:
        """Rank for sorting and for the overall result: FAIL > WARN > OK > SKIP."""
        return {Status.FAIL: 3, Status.WARN: 2, Status.OK: 1, Status.SKIP: 0}[self]


# Nagios-style exit codes; EXIT_ERROR means verify could not run (bad config, bad arguments).
EXIT_OK, EXIT_WARN, EXIT_FAIL, EXIT_ERROR = 0, 1, 2, 3

CATEGORIES: tuple[str, ...] = ("system", "gpu", "software", "services", "models", "perf", "train")


@dataclass
class CheckResult:
    """One check's verdict: `value` is what was measured, `expected` the expectation or threshold."""

    status: Status
    message: str
    value: Any = None
    expected: Any = None
    unit: str | None = None
    hint: str = ""
    # Per-item numeric readings (e.g. one per GPU), exported as their own Prometheus series.
    items: dict[str, float] = field(default_factory=dict)
    # Filled in by the runner from the check's registration.
    id: str = ""
    category: str = ""
    level: int = 1
    duration_s: float = 0.0


def ok(message: str, **kw: Any) -> CheckResult:
    return CheckResult(Status.OK, message, **kw)


def warn(message: str, **kw: Any) -> CheckResult:
    return CheckResult(Status.WARN, message, **kw)


def fail(message: str, **kw: Any) -> CheckResult:
    return CheckResult(Status.FAIL, message, **kw)


def skip(message: str, **kw: Any) -> CheckResult:
    return CheckResult(Status.SKIP, message, **kw)


def worst(results: list[CheckResult]) -> Status:
    return max((r.status for r in results), key=lambda s: s.severity, default=Status.SKIP)


def exit_code(results: list[CheckResult]) -> int:
    return {Status.FAIL: EXIT_FAIL, Status.WARN: EXIT_WARN}.get(worst(results), EXIT_OK)


CheckFunc = Callable[["VerifyContext"], CheckResult]


@dataclass(frozen=True)
class Check:
    id: str
    level: int
    description: str
    func: CheckFunc

    @property
    def category(self) -> str:
        return self.id.split(".", 1)[0]


REGISTRY: list[Check] = []


def check(check_id: str, description: str, level: int = 1) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check: `category.name`, a one-line description for the docs and --list, the lowest level."""
    category = check_id.split(".", 1)[0]
    if category not in CATEGORIES:
        raise ValueError(f"check {check_id}: unknown category {category!r}")

    def register(func: CheckFunc) -> CheckFunc:
        REGISTRY.append(Check(check_id, level, description, func))
        return func

    return register

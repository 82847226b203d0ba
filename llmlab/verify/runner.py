"""Select checks by level, category and id, and run them: quick checks in parallel, probes one at a time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import llmlab.verify.checks  # noqa: F401 - registers the catalogue
from llmlab.config import ConfigError
from llmlab.verify.context import VerifyContext
from llmlab.verify.result import CATEGORIES, REGISTRY, Check, CheckResult, fail

# Quick checks mostly wait (subprocesses, sockets, NVML): threads overlap them. Probes (level 2+) measure the
# GPUs and must not share them with each other, so they run one after another.
PARALLEL_WORKERS = 16


def catalogue() -> list[Check]:
    order = {category: i for i, category in enumerate(CATEGORIES)}
    return sorted(REGISTRY, key=lambda c: order[c.category])  # stable: keeps registration order within one


def _parse(option: str, names: list[str]) -> set[str]:
    valid_ids = {c.id for c in REGISTRY}
    chosen = set()
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in CATEGORIES and name not in valid_ids:
            raise ConfigError(
                f"{option}: unknown category or check id {name!r}; categories: {', '.join(CATEGORIES)}; "
                "check ids: see `llmlab verify --list`"
            )
        chosen.add(name)
    return chosen


def select(level: int, only: list[str] | None = None, skip: list[str] | None = None) -> list[Check]:
    """Checks up to `level`; --only narrows to categories/ids (a named id runs at any level); --skip drops."""
    only_set, skip_set = _parse("--only", only or []), _parse("--skip", skip or [])
    chosen = []
    for c in catalogue():
        named = c.id in only_set
        if c.level > level and not named:
            continue
        if only_set and not (named or c.category in only_set):
            continue
        if c.id in skip_set or c.category in skip_set:
            continue
        chosen.append(c)
    return chosen


def _run_one(ctx: VerifyContext, c: Check) -> CheckResult:
    start = time.perf_counter()
    try:
        result = c.func(ctx)
    except Exception as exc:  # one broken check must not hide the others' results
        result = fail(
            f"check crashed: {type(exc).__name__}: {exc}",
            hint="a bug in llmlab verify or an unexpected host state: report it with the --json output",
        )
    result.id, result.category, result.level = c.id, c.category, c.level
    result.duration_s = round(time.perf_counter() - start, 3)
    return result


def run_checks(ctx: VerifyContext, checks: list[Check]) -> list[CheckResult]:
    """Results in catalogue order."""
    quick = [c for c in checks if c.level == 1]
    probes = [c for c in checks if c.level > 1]
    with ThreadPoolExecutor(max_workers=PARALLEL_WORKERS, thread_name_prefix="verify") as pool:
        results = list(pool.map(lambda c: _run_one(ctx, c), quick))
    results += [_run_one(ctx, c) for c in probes]
    order = {c.id: i for i, c in enumerate(checks)}
    return sorted(results, key=lambda r: order[r.id])

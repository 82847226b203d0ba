"""models: the shared model store is writable by the lab group; every pinned model is present and intact."""

from __future__ import annotations

import stat
from typing import Any

from llmlab.verify.context import VerifyContext
from llmlab.verify.result import CheckResult, check, fail, ok, skip, warn

STORE_HINT = "apply the model_store role (creates the store owned by the lab group, mode 2775)"


@check("models.store_writable", "the model store exists and is group-writable by lab_group (setgid)")
def store_writable(ctx: VerifyContext) -> CheckResult:
    store, group = ctx.config.model_store, ctx.config.lab_group
    if not ctx.settings.expect.model_store:
        return skip("no model store expected (verify.expect.model_store=false)")
    info = ctx.sources.fs.path_info(store)
    if info is None or not info.is_dir:
        return fail(
            f"{store} {'is not a directory' if info else 'does not exist'}",
            expected="a directory",
            hint=STORE_HINT,
        )
    gid = ctx.sources.fs.group_id(group)
    expected = f"group {group}, mode g+ws"
    mode = stat.filemode(info.mode)
    if gid is None:
        return fail(f"group {group!r} does not exist", value=mode, expected=expected, hint=STORE_HINT)
    if info.gid != gid:
        return fail(
            f"{store} belongs to gid {info.gid}, not {group}", value=mode, expected=expected, hint=STORE_HINT
        )
    if not info.mode & stat.S_IWGRP:
        return fail(f"{store} is not group-writable ({mode})", value=mode, expected=expected, hint=STORE_HINT)
    if not info.mode & stat.S_ISGID:
        return warn(
            f"{store} lacks the setgid bit ({mode}): new files will not belong to {group}",
            value=mode,
            expected=expected,
            hint=f"chmod g+s {store}",
        )
    return ok(f"{store} writable by group {group} ({mode})", value=mode, expected=expected)


def pin_problem(store: Any, spec: str, rehash: bool) -> str | None:
    """What is wrong with a pinned `name[@revision]`, or None. Level 1 compares sizes; level 2+ re-hashes."""
    try:
        result = store.verify(spec, quick=not rehash)
    except LookupError as exc:  # ModelNotFound
        return f"not in the store ({exc})"
    except RuntimeError as exc:  # StoreError: an unreadable manifest
        return str(exc)
    return None if result.ok else ", ".join(result.problems)


@check("models.pins", "every model in model_pins is in the store and intact (sizes; sha256 at level 2+)")
def pins(ctx: VerifyContext) -> CheckResult:
    names = ctx.settings.model_pins
    if not names:
        return skip("no models pinned (verify.model_pins is empty)")
    store = ctx.sources.models()
    if store is None:
        return skip("the model store package (llmlab.models) is not available in this build")
    rehash = ctx.level >= 2
    problems = [f"{name}: {problem}" for name in names if (problem := pin_problem(store, name, rehash))]
    value = f"{len(names) - len(problems)}/{len(names)} intact"
    if problems:
        return fail(
            "; ".join(problems),
            value=value,
            expected=f"{len(names)}/{len(names)} intact",
            hint="re-fetch with `llmlab models pull NAME` (or `import`), then `llmlab models verify NAME`",
        )
    return ok(f"{value}: {', '.join(names)}", value=value, expected=f"{len(names)}/{len(names)} intact")

"""models: the shared model store is writable by the lab group; every pinned model is present and intact."""

from __future__ import annotations

import stat

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


@check("models.pins", "every model in model_pins is in the store and intact (llmlab.models)")
def pins(ctx: VerifyContext) -> CheckResult:
    names = ctx.settings.model_pins
    if not names:
        return skip("no models pinned (verify.model_pins is empty)")
    store = ctx.sources.models()
    if store is None:
        return skip("the model store package (llmlab.models) is not available in this build")
    problems = []
    for name in names:
        try:
            result = store.verify(name)
        except LookupError as exc:  # ModelNotFound (a KeyError/LookupError) and similar
            problems.append(f"{name}: missing ({exc})")
            continue
        if not result.ok:
            problems.append(f"{name}: {getattr(result, 'problems', None) or 'damaged'}")
    value = f"{len(names) - len(problems)}/{len(names)} intact"
    if problems:
        return fail(
            "; ".join(problems),
            value=value,
            expected=f"{len(names)}/{len(names)} intact",
            hint="re-fetch with `llmlab models pull NAME` (models role), then `llmlab models verify NAME`",
        )
    return ok(f"{value}: {', '.join(names)}", value=value, expected=f"{len(names)}/{len(names)} intact")

"""system: OS, CPU and RAM against the inventory, swap, disk space and inodes, time sync, pending reboot."""

from __future__ import annotations

from pathlib import Path

from llmlab.verify.context import VerifyContext
from llmlab.verify.result import CheckResult, check, fail, ok, skip, warn
from llmlab.verify.settings import UpperLimits
from llmlab.verify.sources import HostFacts, kernel_sort_key

GIB = 2**30


def _facts(ctx: VerifyContext) -> HostFacts:
    return ctx.once("host_facts", ctx.sources.host.facts)


@check("system.os", "OS release and kernel, against expect.os when set")
def os_release(ctx: VerifyContext) -> CheckResult:
    facts = _facts(ctx)
    found = f"{facts.os_id} {facts.os_version_id}".strip()
    value = f"{found} (kernel {facts.kernel})"
    expected = ctx.settings.expect.os
    if expected is None:
        return ok(f"{facts.os_name}, kernel {facts.kernel}", value=value)
    if found.lower() == expected or found.lower().startswith(expected + "."):
        return ok(f"{facts.os_name}, kernel {facts.kernel}", value=value, expected=expected)
    return fail(
        f"OS is {found}, the inventory says {expected}",
        value=value,
        expected=expected,
        hint="reinstall the host with the expected OS, or correct verify.expect.os in the inventory",
    )


def _against_expected(
    what: str, found: float, expected: float | None, tolerance_pct: float, unit: str, key: str
) -> CheckResult:
    """FAIL below expected - tolerance (hardware missing), WARN above it + tolerance (inventory stale)."""
    shown = f"{found:g} {unit}".strip()
    if expected is None:
        return ok(f"{what}: {shown} (no expectation set)", value=found, unit=unit or None)
    deviation = 100.0 * (found - expected) / expected
    kw = {"value": round(found, 2), "expected": expected, "unit": unit or None}
    if deviation < -tolerance_pct:
        return fail(
            f"{what}: {shown}, expected {expected:g} (±{tolerance_pct:g} %)",
            hint=f"check for failed or disabled hardware (BIOS, DIMMs, SMT), or correct {key}",
            **kw,
        )
    if deviation > tolerance_pct:
        return warn(
            f"{what}: {shown}, more than the expected {expected:g} (±{tolerance_pct:g} %)",
            hint=f"update {key} in the inventory",
            **kw,
        )
    return ok(f"{what}: {shown}", **kw)


@check("system.cpu_count", "logical CPUs against expect.cpu_count (± resource_tolerance_percent)")
def cpu_count(ctx: VerifyContext) -> CheckResult:
    tolerance = ctx.settings.thresholds.resource_tolerance_percent
    return _against_expected(
        "logical CPUs",
        _facts(ctx).cpu_count,
        ctx.settings.expect.cpu_count,
        tolerance,
        "",
        "verify.expect.cpu_count",
    )


@check("system.memory", "RAM against expect.memory_gib (± resource_tolerance_percent)")
def memory(ctx: VerifyContext) -> CheckResult:
    tolerance = ctx.settings.thresholds.resource_tolerance_percent
    gib = _facts(ctx).memory_bytes / GIB
    return _against_expected(
        "RAM", round(gib, 1), ctx.settings.expect.memory_gib, tolerance, "GiB", "verify.expect.memory_gib"
    )


def _upper(what: str, value: float, limits: UpperLimits, key: str, hint: str, unit: str = "%") -> CheckResult:
    kw = {
        "value": round(value, 1),
        "expected": f"< {limits.warn:g}{unit} (fail at {limits.fail:g}{unit})",
        "unit": unit,
    }
    if value >= limits.fail:
        return fail(f"{what} at {value:.1f}{unit}, fail threshold {limits.fail:g}{unit}", hint=hint, **kw)
    if value >= limits.warn:
        return warn(f"{what} at {value:.1f}{unit}, warn threshold {limits.warn:g}{unit}", hint=hint, **kw)
    return ok(f"{what} at {value:.1f}{unit}", **kw)


@check("system.swap", "swap on/off against expect.swap; swap in use against thresholds.swap_used_percent")
def swap(ctx: VerifyContext) -> CheckResult:
    facts = _facts(ctx)
    enabled = facts.swap_total_bytes > 0
    expected = ctx.settings.expect.swap
    state = f"{facts.swap_total_bytes / GIB:.1f} GiB" if enabled else "off"
    if expected is not None and expected != enabled:
        return warn(
            f"swap is {state}, the inventory says {'on' if expected else 'off'}",
            value=enabled,
            expected=expected,
            hint="swapoff -a and remove swap from /etc/fstab" if enabled else "add a swap file or partition",
        )
    if not enabled:
        return ok("swap is off", value=False, expected=expected)
    used = 100.0 * facts.swap_used_bytes / facts.swap_total_bytes
    limits = ctx.settings.thresholds.swap_used_percent
    return _upper(
        f"swap ({state}) used", used, limits, "swap", "the host is short of RAM: find what swaps (smem, top)"
    )


def _disk(ctx: VerifyContext, path: Path, inodes: bool) -> CheckResult:
    usage = ctx.sources.fs.usage(path)
    th = ctx.settings.thresholds
    if inodes:
        percent = usage.inodes_percent
        if percent is None:
            return skip(f"{path}: the filesystem has no inode limit", expected=None)
        hint = f"many small files under {path}: clear caches (pip, HF datasets), old checkpoints"
        return _upper(f"inodes on {path}", percent, th.inodes_used_percent, "inodes", hint)
    free_gib = usage.avail_bytes / GIB
    hint = f"free space on {path} (old checkpoints, docker system prune, HF cache), or grow the volume"
    result = _upper(
        f"{path} used ({free_gib:.1f} GiB free)", usage.used_percent, th.disk_used_percent, "disk", hint
    )
    result.items = {"free_bytes": float(usage.avail_bytes)}
    return result


@check("system.disk_root", "space used on / (thresholds.disk_used_percent: warn 70, fail 83)")
def disk_root(ctx: VerifyContext) -> CheckResult:
    return _disk(ctx, Path("/"), inodes=False)


@check("system.inodes_root", "inodes used on / (thresholds.inodes_used_percent)")
def inodes_root(ctx: VerifyContext) -> CheckResult:
    return _disk(ctx, Path("/"), inodes=True)


def _store_or_skip(ctx: VerifyContext) -> CheckResult | None:
    store = ctx.config.model_store
    if not ctx.settings.expect.model_store:
        return skip("no model store expected (verify.expect.model_store=false)")
    info = ctx.sources.fs.path_info(store)
    if info is None or not info.is_dir:
        return skip(f"model store {store} does not exist (see models.store_writable)")
    return None


@check("system.disk_model_store", "space used on the model store's filesystem (thresholds.disk_used_percent)")
def disk_model_store(ctx: VerifyContext) -> CheckResult:
    return _store_or_skip(ctx) or _disk(ctx, ctx.config.model_store, inodes=False)


@check(
    "system.inodes_model_store",
    "inodes used on the model store's filesystem (thresholds.inodes_used_percent)",
)
def inodes_model_store(ctx: VerifyContext) -> CheckResult:
    return _store_or_skip(ctx) or _disk(ctx, ctx.config.model_store, inodes=True)


@check("system.time_sync", "the kernel clock is synchronised (adjtimex), when expect.time_synchronized")
def time_sync(ctx: VerifyContext) -> CheckResult:
    synced = ctx.sources.host.clock_synchronized()
    expected = ctx.settings.expect.time_synchronized
    if synced is None:
        return skip("cannot read the clock state (adjtimex unavailable)", expected=expected)
    if synced:
        return ok("clock synchronised", value=True, expected=expected)
    if not expected:
        return skip(
            "clock not synchronised; not expected (verify.expect.time_synchronized=false)", value=False
        )
    return warn(
        "clock not synchronised",
        value=False,
        expected=True,
        hint="enable an NTP client (chrony or systemd-timesyncd) and check it reaches its servers",
    )


@check("system.reboot_required", "no pending reboot: /var/run/reboot-required, or a newer installed kernel")
def reboot_required(ctx: VerifyContext) -> CheckResult:
    state = ctx.sources.host.kernel_state()
    hint = "reboot in a maintenance window (a new kernel or driver waits to be loaded)"
    if state.reboot_flag:
        return warn("/var/run/reboot-required is present", value=True, expected=False, hint=hint)
    flavour, running = kernel_sort_key(state.running)
    newer = [
        k for k in state.installed if kernel_sort_key(k)[0] == flavour and kernel_sort_key(k)[1] > running
    ]
    if newer:
        newest = max(newer, key=kernel_sort_key)
        return warn(
            f"running kernel {state.running}, installed {newest}", value=True, expected=False, hint=hint
        )
    return ok(f"no reboot pending (kernel {state.running})", value=False, expected=False)

"""gpu: what NVML reports (count, model, driver, ECC, row remapping, thermals, PCIe, NVLink, MIG) and XIDs.

A host that expects no GPU reports these as SKIP; a host that expects GPUs and cannot read them FAILs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from llmlab.gpus import find_sku
from llmlab.verify.context import VerifyContext
from llmlab.verify.nvml import GpuDevice, NvmlSnapshot, NvmlUnavailable
from llmlab.verify.result import CheckResult, Status, check, fail, ok, skip

DRIVER_HINT = (
    "install the pinned NVIDIA driver (nvidia_driver role) and reboot; `dmesg | grep -i nvrm` says why"
)

# XIDs that mean the GPU or its memory needs attention (reset, drain, RMA), per NVIDIA's XID catalogue
# (docs.nvidia.com/deploy/xid-errors) as the issue lists them; any other XID is a warning.
CRITICAL_XIDS = frozenset({48, 56, 57, 58, 62, 63, 64, 65, 68, 69, 73, 74, 79, 80, 81, 92, 119, 120})
_XID_LINE = re.compile(r"NVRM: Xid \((?:PCI:)?([^)]*)\): (\d+)")

# nvmlClocksEventReason* bits (nvml.h): hardware slowdowns mean cooling or power delivery is failing.
HW_SLOWDOWN, SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE = 0x8, 0x20, 0x40, 0x80
_REASON_NAMES = {HW_SLOWDOWN: "HW slowdown", HW_THERMAL: "HW thermal", HW_POWER_BRAKE: "HW power brake"}


def gpus_or_verdict(ctx: VerifyContext) -> NvmlSnapshot | CheckResult:
    """The GPUs, or every GPU check's verdict when there are none: SKIP if none expected, else FAIL."""
    expected = ctx.settings.expect.gpu_count
    try:
        snapshot = ctx.nvml()
    except NvmlUnavailable as exc:
        if expected == 0:
            return skip(f"no GPU expected (gpu_count=0); {exc}")
        return fail(f"{expected} GPU(s) expected but {exc}", value=0, expected=expected, hint=DRIVER_HINT)
    if not snapshot.devices:
        if expected == 0:
            return skip("no GPU expected and none found")
        return fail(
            f"{expected} GPU(s) expected, NVML sees none", value=0, expected=expected, hint=DRIVER_HINT
        )
    return snapshot


def _label(gpu: GpuDevice) -> str:
    return f"GPU{gpu.index}"


Finding = tuple[Status, str]


def per_gpu(
    ctx: VerifyContext,
    judge: Callable[[GpuDevice], Finding | None],
    ok_message: str,
    hint: str,
    expected: object = None,
    reading: Callable[[GpuDevice], float | None] | None = None,
    unit: str | None = None,
    worst_reading: Callable[..., float] = max,
) -> CheckResult:
    """Judge each GPU; the worst finding sets the status, and every non-OK GPU is named in the message.

    `judge` returns None when the GPU does not report the reading; all-None is a SKIP. The headline value
    is the worst per-GPU reading (`worst_reading`: max, or min where lower is worse).
    """
    gpus = gpus_or_verdict(ctx)
    if isinstance(gpus, CheckResult):
        return gpus
    findings = {gpu.index: judge(gpu) for gpu in gpus.devices}
    items = {}
    if reading is not None:
        items = {_label(g): float(v) for g in gpus.devices if (v := reading(g)) is not None}
    headline = worst_reading(items.values()) if items else None
    reported = {i: f for i, f in findings.items() if f is not None}
    if not reported:
        return skip("not reported by these GPUs", expected=expected)
    bad = {i: f for i, f in reported.items() if f[0] in (Status.WARN, Status.FAIL)}
    if not bad:
        return ok(ok_message, value=headline, expected=expected, unit=unit, items=items)
    status = max((f[0] for f in bad.values()), key=lambda s: s.severity)
    message = "; ".join(f"GPU{i}: {f[1]}" for i, f in sorted(bad.items()))
    return CheckResult(status, message, value=headline, expected=expected, unit=unit, hint=hint, items=items)


@check("gpu.count", "GPU count and model against expect.gpu_count / expect.gpu_model")
def count(ctx: VerifyContext) -> CheckResult:
    expect = ctx.settings.expect
    gpus = gpus_or_verdict(ctx)
    if isinstance(gpus, CheckResult):
        return gpus
    found = len(gpus.devices)
    names = sorted({g.name for g in gpus.devices})
    expected = f"{expect.gpu_count} x {expect.gpu_model or 'any model'}"
    value = f"{found} x {', '.join(names)}"
    if found != expect.gpu_count:
        return fail(
            f"{found} GPU(s) found, {expect.gpu_count} expected",
            value=value,
            expected=expected,
            hint="a lost GPU has likely fallen off the bus (see gpu.xid): reseat or RMA; or fix inventory",
        )
    if expect.gpu_model:
        wrong = [g for g in gpus.devices if (sku := find_sku(g.name)) is None or sku.name != expect.gpu_model]
        if wrong:
            return fail(
                f"{', '.join(f'{_label(g)} is {g.name}' for g in wrong)}; expected {expect.gpu_model}",
                value=value,
                expected=expected,
                hint="correct verify.expect.gpu_model in the inventory, or the host is not the one you think",
            )
    return ok(f"{value}", value=value, expected=expected, items={"count": float(found)})


def _version_matches(found: str, pinned: str) -> bool:
    """'535' and '535.183' match '535.183.01' (component-wise prefix); '53' does not."""
    return found.split(".")[: len(pinned.split("."))] == pinned.split(".")


@check("gpu.driver", "NVIDIA driver version against expect.driver_version (exact or prefix)")
def driver(ctx: VerifyContext) -> CheckResult:
    gpus = gpus_or_verdict(ctx)
    if isinstance(gpus, CheckResult):
        return gpus
    pinned = ctx.settings.expect.driver_version
    cuda = gpus.cuda_driver_version_str
    message = f"driver {gpus.driver_version} (supports CUDA {cuda or '?'})"
    if pinned is None:
        return ok(message + "; no pin set", value=gpus.driver_version)
    if not _version_matches(gpus.driver_version, pinned):
        return fail(
            f"driver {gpus.driver_version}, pinned {pinned}",
            value=gpus.driver_version,
            expected=pinned,
            hint="reinstall the pinned driver (nvidia_driver role) and hold the packages against upgrades",
        )
    return ok(message, value=gpus.driver_version, expected=pinned)


@check("gpu.persistence_mode", "persistence mode on (expect.persistence_mode)")
def persistence_mode(ctx: VerifyContext) -> CheckResult:
    expected = ctx.settings.expect.persistence_mode

    def judge(g: GpuDevice) -> Finding | None:
        if g.persistence_mode is None:
            return None
        if g.persistence_mode != expected:
            return Status.WARN, f"persistence mode {'on' if g.persistence_mode else 'off'}"
        return Status.OK, ""

    hint = "enable nvidia-persistenced (systemctl enable --now nvidia-persistenced)"
    return per_gpu(ctx, judge, f"persistence mode {'on' if expected else 'off'}", hint, expected=expected)


@check("gpu.ecc_errors", "no volatile uncorrected ECC errors since the last driver load")
def ecc_errors(ctx: VerifyContext) -> CheckResult:
    def judge(g: GpuDevice) -> Finding | None:
        n = g.ecc_volatile_uncorrected
        if n is None:
            return None
        return (Status.FAIL, f"{n} uncorrected ECC error(s)") if n > 0 else (Status.OK, "")

    hint = "drain the host, reset the GPU (nvidia-smi -r -i N) and watch gpu.row_remap; repeated errors: RMA"
    return per_gpu(
        ctx,
        judge,
        "no uncorrected ECC errors",
        hint,
        expected=0,
        reading=lambda g: g.ecc_volatile_uncorrected,
    )


@check("gpu.row_remap", "no row remapping pending or failed (Ampere and newer)")
def row_remap(ctx: VerifyContext) -> CheckResult:
    def judge(g: GpuDevice) -> Finding | None:
        if g.remap_pending is None:
            return None
        if g.remap_failed:
            return Status.FAIL, "row remapping FAILED (the GPU is out of spare rows)"
        if g.remap_pending:
            return Status.FAIL, "row remap pending: a reset is needed before the bad row is retired"
        return Status.OK, ""

    hint = "pending: drain and reset the GPU (nvidia-smi -r) or reboot; failed: RMA the GPU"
    return per_gpu(
        ctx,
        judge,
        "no row remap pending or failed",
        hint,
        expected="none pending",
        reading=lambda g: g.remapped_rows_uncorrectable,
    )


@check("gpu.retired_pages", "no page retirement pending; retired pages counted (pre-Ampere)")
def retired_pages(ctx: VerifyContext) -> CheckResult:
    def judge(g: GpuDevice) -> Finding | None:
        if g.retired_pages is None and g.retired_pages_pending is None:
            return None
        if g.retired_pages_pending:
            return Status.FAIL, "page retirement pending (takes effect at the next driver load)"
        if g.retired_pages:
            return Status.WARN, f"{g.retired_pages} retired page(s)"
        return Status.OK, ""

    hint = "pending: reboot or reset the GPU; a growing count of retired pages: plan an RMA"
    return per_gpu(ctx, judge, "no retired pages", hint, expected=0, reading=lambda g: g.retired_pages)


@check("gpu.temperature", "GPU temperature below its slowdown threshold (or thresholds.gpu_temperature_c)")
def temperature(ctx: VerifyContext) -> CheckResult:
    limits = ctx.settings.thresholds.gpu_temperature_c

    def judge(g: GpuDevice) -> Finding | None:
        if g.temperature_c is None:
            return None
        if limits is not None:
            warn_at, fail_at = limits.warn, limits.fail
        elif g.slowdown_temperature_c:
            warn_at, fail_at = g.slowdown_temperature_c - 10, g.slowdown_temperature_c
        else:
            return Status.OK, ""  # no threshold known: report the reading only
        if g.temperature_c >= fail_at:
            return Status.FAIL, f"{g.temperature_c} C (limit {fail_at:g} C)"
        if g.temperature_c >= warn_at:
            return Status.WARN, f"{g.temperature_c} C (warn at {warn_at:g} C)"
        return Status.OK, ""

    expected = "slowdown - 10 C" if limits is None else f"< {limits.warn:g} C"
    hint = "check airflow, fans and inlet temperature; a hot idle GPU points at cooling, not load"
    return per_gpu(
        ctx,
        judge,
        "temperatures normal",
        hint,
        expected=expected,
        reading=lambda g: g.temperature_c,
        unit="C",
    )


@check("gpu.clock_events", "no hardware slowdown, thermal or power-brake clock throttling")
def clock_events(ctx: VerifyContext) -> CheckResult:
    def judge(g: GpuDevice) -> Finding | None:
        reasons = g.clock_event_reasons
        if reasons is None:
            return None
        hardware = [name for bit, name in _REASON_NAMES.items() if reasons & bit]
        if hardware:
            return Status.FAIL, "throttled: " + ", ".join(hardware)
        if reasons & SW_THERMAL:
            return Status.WARN, "throttled: software thermal slowdown"
        return Status.OK, ""  # idle, power cap, app clocks, sync boost: normal operation

    hint = "HW slowdown/thermal: cooling or PSU problem, check fans and power cables; SW thermal: airflow"
    return per_gpu(ctx, judge, "no hardware throttling", hint, expected="no HW slowdown")


@check("gpu.pcie_link", "PCIe link width at the device maximum (and generation, when busy)")
def pcie_link(ctx: VerifyContext) -> CheckResult:
    def judge(g: GpuDevice) -> Finding | None:
        if g.pcie_width is None or g.pcie_width_max is None:
            return None
        if g.pcie_width < g.pcie_width_max:
            return Status.FAIL, f"PCIe link x{g.pcie_width} of x{g.pcie_width_max}"
        # GPUs lower the link generation when idle to save power: only a busy (P0) GPU must run at its max.
        busy = g.performance_state == 0
        if busy and g.pcie_gen is not None and g.pcie_gen_max is not None and g.pcie_gen < g.pcie_gen_max:
            return Status.WARN, f"PCIe gen {g.pcie_gen} of {g.pcie_gen_max} while busy"
        return Status.OK, ""

    hint = "reseat the GPU or riser, check the slot's BIOS bifurcation/link settings; run perf.host_copy"
    return per_gpu(
        ctx,
        judge,
        "PCIe links at full width",
        hint,
        expected="width = max",
        reading=lambda g: g.pcie_width,
        worst_reading=min,
    )


@check("gpu.processes", "no process holds GPU memory (except allowed_gpu_processes)")
def processes(ctx: VerifyContext) -> CheckResult:
    allowed = set(ctx.settings.allowed_gpu_processes)

    def judge(g: GpuDevice) -> Finding | None:
        stray = [p for p in g.processes if p.name not in allowed or not p.name]
        if not stray:
            return Status.OK, ""
        shown = [
            f"pid {p.pid} {p.name or '(not visible here: exited, or in a container)'}"
            + (f" {p.used_mib:.0f} MiB" if p.used_mib is not None else "")
            for p in stray
        ]
        return Status.WARN, ", ".join(shown)

    hint = "stop or kill the stray processes (or add their names to verify.allowed_gpu_processes)"
    return per_gpu(
        ctx, judge, "no stray GPU processes", hint, expected="none", reading=lambda g: float(len(g.processes))
    )


@check("gpu.nvlink", "active NVLink links per GPU against expect.nvlink_active_links")
def nvlink(ctx: VerifyContext) -> CheckResult:
    expected = ctx.settings.expect.nvlink_active_links

    def judge(g: GpuDevice) -> Finding | None:
        if g.nvlink_links is None:
            return None if not expected else (Status.FAIL, f"no NVLink, {expected} active links expected")
        if expected is not None and (g.nvlink_active or 0) < expected:
            return Status.FAIL, f"{g.nvlink_active} of {g.nvlink_links} links active, {expected} expected"
        return Status.OK, ""

    hint = (
        "inactive NVLinks: check the fabric manager (systemctl status nvidia-fabricmanager), reseat bridges"
    )
    return per_gpu(
        ctx,
        judge,
        "NVLink links as expected",
        hint,
        expected=expected,
        reading=lambda g: g.nvlink_active,
        worst_reading=min,
    )


@check("gpu.mig", "MIG mode against expect.mig_mode; no pending MIG change")
def mig(ctx: VerifyContext) -> CheckResult:
    expected = ctx.settings.expect.mig_mode

    def judge(g: GpuDevice) -> Finding | None:
        if g.mig_enabled is None:
            return None if not expected else (Status.FAIL, "MIG not supported, but expected")
        if g.mig_pending is not None and g.mig_pending != g.mig_enabled:
            return Status.WARN, "MIG mode change pending a GPU reset"
        if expected is not None and g.mig_enabled != expected:
            return Status.FAIL, f"MIG {'enabled' if g.mig_enabled else 'disabled'}"
        return Status.OK, ""

    hint = "set MIG mode with `nvidia-smi -i N -mig 0|1` and reset the GPU, or correct verify.expect.mig_mode"
    return per_gpu(ctx, judge, "MIG mode as expected", hint, expected=expected)


def parse_xids(lines: list[str]) -> list[tuple[str, int]]:
    """(PCI address, XID) for every `NVRM: Xid` line of the kernel log."""
    return [(m.group(1), int(m.group(2))) for line in lines if (m := _XID_LINE.search(line))]


@check("gpu.xid", "no XID errors in the kernel log since boot (or thresholds.xid_window_hours)")
def xid(ctx: VerifyContext) -> CheckResult:
    if ctx.settings.expect.gpu_count == 0:
        gpus = gpus_or_verdict(ctx)
        if isinstance(gpus, CheckResult):
            return gpus
    hours = ctx.settings.thresholds.xid_window_hours
    since = None if hours is None else time.time() - hours * 3600
    window = "since boot" if hours is None else f"in the last {hours:g} h"
    log = ctx.sources.host.kernel_log(since)
    if log is None:
        return fail(
            "cannot read the kernel log (journald has none, /dev/kmsg is not readable)",
            expected="none",
            hint="run verify as root (the llmlab role's timer does)",
        )
    xids = parse_xids(log)
    critical = sorted({x for _, x in xids if x in CRITICAL_XIDS})
    other = sorted({x for _, x in xids if x not in CRITICAL_XIDS})
    items = {"critical": float(sum(x in CRITICAL_XIDS for _, x in xids)), "other": float(len(xids))}
    items["other"] -= items["critical"]
    where = sorted({pci for pci, _ in xids})
    if critical:
        return fail(
            f"critical XID {', '.join(map(str, critical))} {window} on {', '.join(where)}",
            value=critical,
            expected="none",
            items=items,
            hint="drain the host; do what docs.nvidia.com/deploy/xid-errors says for it (reset, reboot, RMA)",
        )
    if other:
        return CheckResult(
            Status.WARN,
            f"XID {', '.join(map(str, other))} {window} on {', '.join(where)}",
            value=other,
            expected="none",
            items=items,
            hint="usually an application fault (e.g. 13, 31, 43); repeated ones deserve a look at the jobs",
        )
    return ok(f"no XID {window}", value=[], expected="none", items=items)

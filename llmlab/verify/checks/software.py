"""software: the lab environment's torch (imports, GPUs, CUDA/cuDNN/NCCL, bf16), minimum versions, pip check.

Everything is read by running the lab environment's own python (verify.lab_python), so the checks judge the
environment users run jobs in, not llmlab's.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from llmlab.verify.checks.gpu import DRIVER_HINT
from llmlab.verify.context import VerifyContext
from llmlab.verify.lab import LabProbeError, LabReport, lab_command, lab_python, lab_report
from llmlab.verify.nvml import NvmlUnavailable
from llmlab.verify.result import CheckResult, check, fail, ok, skip, warn

ENV_HINT = "rebuild the lab environment (python_env role); check verify.lab_python points at it"


def _report_or_fail(ctx: VerifyContext) -> LabReport | CheckResult:
    try:
        return lab_report(ctx)
    except LabProbeError as exc:
        return fail(str(exc), hint=ENV_HINT)


def _torch_report_or_result(ctx: VerifyContext) -> LabReport | CheckResult:
    """The lab report for a check of torch, or its SKIP where the environment has no ML stack to check."""
    if not ctx.settings.expect.ml_stack:
        return skip("no ML stack expected (verify.expect.ml_stack, from the python_env role)")
    return _report_or_fail(ctx)


@check("software.torch", "torch imports in the lab environment and sees expect.gpu_count GPUs")
def torch_sees_gpus(ctx: VerifyContext) -> CheckResult:
    report = _torch_report_or_result(ctx)
    if isinstance(report, CheckResult):
        return report
    expected = ctx.settings.expect.gpu_count
    if report.torch is None:
        return fail(
            f"torch does not import: {report.torch_error}", expected=f"{expected} GPU(s)", hint=ENV_HINT
        )
    t = report.torch
    build = f"CUDA {t['cuda']}" if t["cuda"] else "CPU build"
    seen = t["device_count"]
    message = f"torch {t['version']} ({build}) sees {seen} GPU(s)"
    kw = {"value": seen, "expected": expected, "items": {"gpus": float(seen)}}
    if seen != expected:
        hint = (
            "install the CUDA build of torch in the lab environment"
            if expected and not t["cuda"]
            else "check CUDA_VISIBLE_DEVICES, the driver (gpu.count) and that torch's CUDA matches it"
        )
        return fail(message + f", {expected} expected", hint=hint, **kw)
    return ok(message, **kw)


def _major_minor(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


@check(
    "software.cuda_compat", "torch's CUDA runtime is supported by the driver, and matches expect.cuda_version"
)
def cuda_compat(ctx: VerifyContext) -> CheckResult:
    report = _torch_report_or_result(ctx)
    if isinstance(report, CheckResult):
        return report
    expect = ctx.settings.expect
    runtime = report.torch["cuda"] if report.torch else None
    if expect.gpu_count == 0:
        return skip(
            f"no GPU expected (torch's CUDA runtime: {runtime or 'none, a CPU build'})", value=runtime
        )
    if runtime is None:
        return fail(
            "torch has no CUDA runtime (CPU build or not importable)",
            expected=expect.cuda_version,
            hint=ENV_HINT,
        )
    if expect.cuda_version and runtime.split(".")[
        : len(expect.cuda_version.split("."))
    ] != expect.cuda_version.split("."):
        return fail(
            f"torch is built for CUDA {runtime}, pinned {expect.cuda_version}",
            value=runtime,
            expected=expect.cuda_version,
            hint="install the torch build for the pinned CUDA (python_env role), or update the pin",
        )
    try:
        driver_cuda = ctx.nvml().cuda_driver_version_str
    except NvmlUnavailable as exc:
        return fail(
            f"CUDA {runtime} runtime, but the driver cannot be read: {exc}", value=runtime, hint=DRIVER_HINT
        )
    if driver_cuda is None:
        return warn(f"CUDA {runtime} runtime; the driver does not report its CUDA version", value=runtime)
    kw = {"value": runtime, "expected": f"<= {driver_cuda}"}
    rt, drv = _major_minor(runtime), _major_minor(driver_cuda)
    if rt[0] > drv[0]:
        return fail(
            f"CUDA {runtime} runtime needs a newer driver (supports {driver_cuda})", hint=DRIVER_HINT, **kw
        )
    if rt > drv:
        return warn(
            f"CUDA {runtime} runtime on a CUDA {driver_cuda} driver: relies on minor-version compatibility",
            hint="upgrade the driver, or install a torch built for the driver's CUDA (PTX JIT may fail)",
            **kw,
        )
    return ok(f"CUDA {runtime} runtime on a driver supporting CUDA {driver_cuda}", **kw)


@check("software.cuda_toolkit", "the CUDA runtime of each toolkit in expect.cuda_toolkits loads")
def cuda_toolkit(ctx: VerifyContext) -> CheckResult:
    versions = ctx.settings.expect.cuda_toolkits
    if not versions:
        return skip("no CUDA toolkit expected (verify.expect.cuda_toolkits, from the cuda_toolkit role)")
    missing = []
    for version in versions:
        major = version.split(".")[0]
        # CUDA 12+ ships libcudart.so.12; CUDA 11 named its soname libcudart.so.11.0.
        if ctx.sources.host.loadable_library([f"libcudart.so.{major}", f"libcudart.so.{major}.0"]) is None:
            missing.append(version)
    kw = {"value": [v for v in versions if v not in missing], "expected": versions}
    if missing:
        return fail(
            f"no loadable CUDA runtime (libcudart) for toolkit {', '.join(missing)}",
            hint="re-run the cuda_toolkit role; check ldconfig -p | grep libcudart",
            **kw,
        )
    return ok(f"CUDA runtime loads for toolkit {', '.join(versions)}", **kw)


@check("software.cudnn_nccl", "cuDNN present; NCCL present on multi-GPU hosts")
def cudnn_nccl(ctx: VerifyContext) -> CheckResult:
    report = _torch_report_or_result(ctx)
    if isinstance(report, CheckResult):
        return report
    expected = ctx.settings.expect.gpu_count
    t = report.torch
    if expected == 0 and not (t and t["cuda_available"]):
        return skip("no GPU expected (cuDNN and NCCL are only used on GPUs)")
    if not t or not t["cuda_available"]:
        return fail("torch cannot use CUDA, so cuDNN/NCCL cannot load", hint="see software.torch")
    value = f"cuDNN {t['cudnn']}, NCCL {t['nccl']}"
    if t["cudnn"] is None:
        return fail(f"cuDNN not available ({value})", value=value, hint=ENV_HINT)
    if t["nccl"] is None and expected > 1:
        return fail(f"NCCL not available on a {expected}-GPU host ({value})", value=value, hint=ENV_HINT)
    return ok(value, value=value)


@check("software.bf16", "the GPUs support bf16 (Ampere and newer)")
def bf16(ctx: VerifyContext) -> CheckResult:
    report = _torch_report_or_result(ctx)
    if isinstance(report, CheckResult):
        return report
    t = report.torch
    if ctx.settings.expect.gpu_count == 0 and not (t and t["cuda_available"]):
        return skip("no GPU expected")
    if not t or not t["cuda_available"]:
        return fail("torch cannot use CUDA", hint="see software.torch")
    if not t["bf16"]:
        return warn("no bf16 on these GPUs: use fp16 with loss scaling", value=False, expected=True)
    return ok("bf16 supported", value=True, expected=True)


def _below(found: str, minimum: str) -> bool:
    try:
        return Version(found) < Version(minimum)
    except InvalidVersion:
        return True


@check(
    "software.min_versions", "torch, transformers, peft, bitsandbytes, accelerate at or above min_versions"
)
def min_versions(ctx: VerifyContext) -> CheckResult:
    report = _report_or_fail(ctx)
    if isinstance(report, CheckResult):
        return report
    minimums = ctx.settings.min_versions
    missing = [name for name in minimums if report.packages.get(name) is None]
    old = [
        f"{name} {found} < {minimums[name]}"
        for name, found in report.packages.items()
        if found is not None and name in minimums and _below(found, minimums[name])
    ]
    value = {name: report.packages.get(name) for name in sorted(minimums)}
    expected = {name: f">= {v}" for name, v in sorted(minimums.items())}
    if missing or old:
        problems = [f"{name} missing" for name in missing] + old
        return fail("; ".join(problems), value=value, expected=expected, hint=ENV_HINT)
    return ok(", ".join(f"{k} {v}" for k, v in value.items()), value=value, expected=expected)


@check("software.pip_check", "`pip check` finds no broken requirement in the lab environment")
def pip_check(ctx: VerifyContext) -> CheckResult:
    result = lab_command(ctx, [lab_python(ctx), "-m", "pip", "check"])
    output = (result.stdout + result.stderr).strip()
    if result.returncode == 0:
        return ok("no broken requirements", value=0, expected=0)
    if "No module named pip" in output:
        return skip("pip is not installed in the lab environment")
    lines = [line for line in output.splitlines() if line.strip()]
    return fail(
        f"{len(lines)} problem(s): {'; '.join(lines[:3])}",
        value=len(lines),
        expected=0,
        hint="install the versions pip asks for (python_env role's pins), then re-run `pip check`",
    )

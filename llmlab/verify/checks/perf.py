"""perf (level 2+): GEMM, memory, host copy, P2P and all-reduce bandwidth as fractions of the SKU's peak.

Peaks come from the catalogue (llmlab/gpus.py) with the host's verify.sku_overrides applied. A result below
the FAIL fraction is measured again (thresholds.probes.retries) and the best run counts: a neighbour's job
must not fail a healthy GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from llmlab.gpus import GpuSku, find_sku
from llmlab.verify.checks.gpu import gpus_or_verdict
from llmlab.verify.context import VerifyContext
from llmlab.verify.nvml import GpuDevice
from llmlab.verify.result import CheckResult, Status, check, fail, skip
from llmlab.verify.settings import FractionOfPeak

# Usable GB/s per lane and direction after line encoding (PCI-SIG: 8b/10b to gen 2, 128b/130b after).
PCIE_LANE_GBS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


def effective_sku(ctx: VerifyContext, device_name: str) -> GpuSku | None:
    sku = find_sku(device_name)
    if sku is None:
        return None
    override = ctx.settings.sku_overrides.get(sku.name)
    if override is None:
        return sku
    return dataclasses.replace(sku, **override.model_dump(exclude_none=True))


def pcie_peak_gbs(sku: GpuSku) -> float:
    return PCIE_LANE_GBS.get(sku.pcie_gen, 0.0) * sku.pcie_width


def link_peak_gbs(sku: GpuSku, gpu: GpuDevice) -> float:
    """One-way peer bandwidth: half the NVLink total when links are up, else the PCIe link."""
    if gpu.nvlink_active and sku.nvlink_bandwidth_gbs:
        return sku.nvlink_bandwidth_gbs / 2
    return pcie_peak_gbs(sku)


def measure_with_retries(
    measure: Callable[[], float], peak: float, limits: FractionOfPeak, retries: int
) -> float:
    best = measure()
    for _ in range(retries):
        if best / peak >= limits.fail:
            break
        best = max(best, measure())
    return best


def judge_fraction(measured: float, peak: float, limits: FractionOfPeak) -> Status:
    fraction = measured / peak
    if fraction < limits.fail:
        return Status.FAIL
    if fraction < limits.warn:
        return Status.WARN
    return Status.OK


def _bench(ctx: VerifyContext) -> Any:
    """The measuring object: TorchBench (imports torch when used), or the one a test put in the sources."""
    if ctx.sources.bench is None:
        from llmlab.verify.bench import TorchBench

        ctx.sources.bench = TorchBench()
    return ctx.sources.bench


def _seconds(ctx: VerifyContext) -> float:
    probes = ctx.settings.thresholds.probes
    return probes.seconds_level3 if ctx.level >= 3 else probes.seconds_level2


def per_gpu_probe(
    ctx: VerifyContext,
    what: str,
    unit: str,
    limits: FractionOfPeak,
    peak_of: Callable[[GpuSku, GpuDevice], float],
    measure: Callable[[GpuDevice], float],
    hint: str,
    devices: Callable[[list[GpuDevice]], list[GpuDevice]] = lambda gpus: gpus,
) -> CheckResult:
    gpus = gpus_or_verdict(ctx)
    if isinstance(gpus, CheckResult):
        return gpus
    chosen = devices(gpus.devices)
    if not chosen:
        return skip(f"{what}: needs at least two GPUs")
    retries = ctx.settings.thresholds.probes.retries
    items, findings, unknown = {}, [], []
    for gpu in chosen:
        sku = effective_sku(ctx, gpu.name)
        peak = peak_of(sku, gpu) if sku else 0.0
        if not peak:
            value = measure(gpu)
            items[f"GPU{gpu.index}"] = round(value, 1)
            unknown.append(f"GPU{gpu.index} {gpu.name}")
            continue
        value = measure_with_retries(lambda g=gpu: measure(g), peak, limits, retries)
        items[f"GPU{gpu.index}"] = round(value, 1)
        status = judge_fraction(value, peak, limits)
        findings.append((status, f"GPU{gpu.index} {value:.1f} {unit} = {value / peak:.0%} of {peak:g}"))
    expected = f">= {limits.warn:.0%} of peak (fail < {limits.fail:.0%})"
    headline = min(items.values())
    if not findings:
        return skip(
            f"{what}: no catalogue peak for {', '.join(unknown)}", value=headline, unit=unit, items=items
        )
    status = max((s for s, _ in findings), key=lambda s: s.severity)
    shown = [text for s, text in findings if s == status] if status != Status.OK else [t for _, t in findings]
    return CheckResult(
        status,
        f"{what}: " + "; ".join(shown),
        value=headline,
        expected=expected,
        unit=unit,
        items=items,
        hint="" if status == Status.OK else hint,
    )


def _gemm(ctx: VerifyContext, dtype: str) -> CheckResult:
    seconds = _seconds(ctx)
    return per_gpu_probe(
        ctx,
        f"{dtype} GEMM",
        "TFLOPS",
        ctx.settings.thresholds.probes.gemm,
        lambda sku, _: sku.bf16_tflops if dtype == "bfloat16" else sku.fp16_tflops,
        lambda g: _bench(ctx).gemm_tflops(f"cuda:{g.index}", dtype, seconds),
        "check gpu.clock_events and gpu.temperature (throttling), power limits (nvidia-smi -q -d POWER)",
    )


@check("perf.gemm_bf16", "bf16 dense GEMM TFLOPS vs the SKU peak (thresholds.probes.gemm)", level=2)
def gemm_bf16(ctx: VerifyContext) -> CheckResult:
    return _gemm(ctx, "bfloat16")


@check("perf.gemm_fp16", "fp16 dense GEMM TFLOPS vs the SKU peak (thresholds.probes.gemm)", level=2)
def gemm_fp16(ctx: VerifyContext) -> CheckResult:
    return _gemm(ctx, "float16")


@check("perf.memory_bandwidth", "device memory copy bandwidth vs the SKU peak", level=2)
def memory_bandwidth(ctx: VerifyContext) -> CheckResult:
    seconds = _seconds(ctx)
    return per_gpu_probe(
        ctx,
        "memory bandwidth",
        "GB/s",
        ctx.settings.thresholds.probes.memory_bandwidth,
        lambda sku, _: sku.memory_bandwidth_gbs,
        lambda g: _bench(ctx).memory_bandwidth_gbs(f"cuda:{g.index}", seconds),
        "check gpu.ecc_errors and gpu.clock_events; memory clocks locked low? (nvidia-smi -q -d CLOCK)",
    )


@check("perf.host_copy", "pinned host-to-device copy bandwidth vs the PCIe link peak", level=2)
def host_copy(ctx: VerifyContext) -> CheckResult:
    seconds = _seconds(ctx)
    return per_gpu_probe(
        ctx,
        "host-to-device copy",
        "GB/s",
        ctx.settings.thresholds.probes.host_copy,
        lambda sku, _: pcie_peak_gbs(sku),
        lambda g: _bench(ctx).host_copy_gbs(f"cuda:{g.index}", seconds),
        "check gpu.pcie_link, NUMA placement, IOMMU settings; a gen4 platform needs sku_overrides.pcie_gen",
    )


@check("perf.p2p", "GPU-to-GPU copy bandwidth (NVLink or PCIe) on multi-GPU hosts", level=2)
def p2p(ctx: VerifyContext) -> CheckResult:
    seconds = _seconds(ctx)
    gpus = gpus_or_verdict(ctx)
    if isinstance(gpus, CheckResult):
        return gpus
    count = len(gpus.devices)
    return per_gpu_probe(
        ctx,
        "peer copy to the next GPU",
        "GB/s",
        ctx.settings.thresholds.probes.p2p,
        link_peak_gbs,
        lambda g: _bench(ctx).p2p_gbs(f"cuda:{g.index}", f"cuda:{(g.index + 1) % count}", seconds),
        "check gpu.nvlink, the fabric manager, and ACS/IOMMU settings that block PCIe peer-to-peer",
        devices=lambda gpus: gpus if len(gpus) > 1 else [],
    )


@check("perf.all_reduce", "NCCL all-reduce bus bandwidth across all GPUs (torch.distributed)", level=2)
def all_reduce(ctx: VerifyContext) -> CheckResult:
    gpus = gpus_or_verdict(ctx)
    if isinstance(gpus, CheckResult):
        return gpus
    n = len(gpus.devices)
    if n < 2:
        return skip("all-reduce: needs at least two GPUs")
    sku = effective_sku(ctx, gpus.devices[0].name)
    limits = ctx.settings.thresholds.probes.all_reduce
    peak = link_peak_gbs(sku, gpus.devices[0]) if sku else 0.0
    seconds = _seconds(ctx)

    def measure() -> float:
        return _bench(ctx).all_reduce_busbw_gbs(n, seconds)

    if not peak:
        value = measure()
        return skip(f"all-reduce {value:.1f} GB/s; no catalogue peak for {gpus.devices[0].name}", value=value)
    value = measure_with_retries(measure, peak, limits, ctx.settings.thresholds.probes.retries)
    status = judge_fraction(value, peak, limits)
    message = f"all-reduce bus bandwidth {value:.1f} GB/s = {value / peak:.0%} of {peak:g} GB/s over {n} GPUs"
    if status == Status.FAIL:
        return fail(
            message, value=round(value, 1), unit="GB/s", hint="run perf.p2p; NCCL_DEBUG=INFO shows the path"
        )
    return CheckResult(
        status,
        message,
        value=round(value, 1),
        expected=f">= {limits.warn:.0%} of peak",
        unit="GB/s",
        hint="" if status == Status.OK else "NCCL_DEBUG=INFO shows which transport NCCL chose",
    )

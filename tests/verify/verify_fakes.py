"""Fake data sources for the verify checks: each stands in for one interface of llmlab/verify/sources.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlab.config import HostConfig
from llmlab.verify.context import Sources, VerifyContext
from llmlab.verify.nvml import GpuDevice, NvmlSnapshot, NvmlUnavailable
from llmlab.verify.result import REGISTRY, CheckResult
from llmlab.verify.sources import (
    CommandResult,
    DockerState,
    FsUsage,
    HostFacts,
    HttpAnswer,
    KernelState,
    Listener,
    PathInfo,
)

GIB = 2**30


class FakeRunner:
    """Answers commands by their argv prefix; records what was run. Unknown commands are 'not found'."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        for prefix, result in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return result
        return CommandResult(127, "", f"{argv[0]}: command not found")


@dataclass
class FakeFs:
    usages: dict[str, FsUsage] = field(default_factory=dict)
    paths: dict[str, PathInfo] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    def usage(self, path: Path) -> FsUsage:
        return self.usages[str(path)]

    def path_info(self, path: Path) -> PathInfo | None:
        return self.paths.get(str(path))

    def group_id(self, name: str) -> int | None:
        return self.groups.get(name)


def usage(used_percent: float, inodes_percent: float = 1.0, total: int = 100 * GIB) -> FsUsage:
    used = int(total * used_percent / 100)
    return FsUsage(total, used, total - used, 1000, int(10 * inodes_percent))


def facts(**kw: Any) -> HostFacts:
    base = {
        "hostname": "gpu01",
        "os_id": "debian",
        "os_version_id": "12",
        "os_name": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.1.0-18-amd64",
        "cpu_count": 64,
        "memory_bytes": 512 * GIB,
        "swap_total_bytes": 0,
        "swap_used_bytes": 0,
        "boot_time": 0.0,
    }
    return HostFacts(**(base | kw))


@dataclass
class FakeHost:
    host_facts: HostFacts = field(default_factory=facts)
    synced: bool | None = True
    kernels: KernelState = field(
        default_factory=lambda: KernelState(False, "6.1.0-18-amd64", ["6.1.0-18-amd64"])
    )
    log: list[str] | None = field(default_factory=list)
    log_since: list[float | None] = field(default_factory=list)
    libraries: set[str] = field(default_factory=set)

    def facts(self) -> HostFacts:
        return self.host_facts

    def clock_synchronized(self) -> bool | None:
        return self.synced

    def kernel_state(self) -> KernelState:
        return self.kernels

    def kernel_log(self, since: float | None) -> list[str] | None:
        self.log_since.append(since)
        return self.log

    def loadable_library(self, names: list[str]) -> str | None:
        return next((name for name in names if name in self.libraries), None)


@dataclass
class FakeNetwork:
    sockets: list[Listener] = field(default_factory=list)
    answers: dict[str, HttpAnswer] = field(default_factory=dict)
    certificates: dict[str, bytes] = field(default_factory=dict)

    def listeners(self) -> list[Listener]:
        return self.sockets

    def peer_certificate(self, url: str, timeout: float) -> bytes | str:
        return self.certificates.get(url, "Connection refused")

    def http_get(self, url: str, timeout: float, verify_tls: bool, ca_file=None) -> HttpAnswer:
        return self.answers.get(url, HttpAnswer(None, error="Connection refused"))


@dataclass
class FakeDocker:
    docker_state: DockerState = field(default_factory=lambda: DockerState(False, error="no socket"))

    def state(self, timeout: float) -> DockerState:
        return self.docker_state


class FakeNvml:
    """An NVML reader that returns a snapshot a test built, or fails as NVML does without a driver."""

    def __init__(self, snapshot: NvmlSnapshot | None = None, error: str = "NVML: library not found") -> None:
        self._snapshot, self._error = snapshot, error
        self.reads = 0

    def snapshot(self) -> NvmlSnapshot:
        self.reads += 1
        if self._snapshot is None:
            raise NvmlUnavailable(self._error)
        return self._snapshot


def healthy_gpu(index: int = 0, **kw: Any) -> GpuDevice:
    """An idle, healthy H100 SXM as NVML would describe it."""
    base = {
        "index": index,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{index:04d}",
        "pci_bus_id": f"00000000:{0x18 + index:02X}:00.0",
        "memory_total_mib": 81559.0,
        "persistence_mode": True,
        "performance_state": 8,
        "ecc_volatile_uncorrected": 0,
        "remapped_rows_uncorrectable": 0,
        "remap_pending": False,
        "remap_failed": False,
        "retired_pages": None,
        "retired_pages_pending": None,
        "temperature_c": 34,
        "slowdown_temperature_c": 87,
        "clock_event_reasons": 0x1,  # idle
        "pcie_gen": 5,
        "pcie_gen_max": 5,
        "pcie_width": 16,
        "pcie_width_max": 16,
        "nvlink_links": 18,
        "nvlink_active": 18,
        "mig_enabled": False,
        "mig_pending": False,
    }
    return GpuDevice(**(base | kw))


def gpus(*devices: GpuDevice, driver: str = "550.90.07", cuda: int | None = 12040) -> FakeNvml:
    return FakeNvml(NvmlSnapshot(driver, cuda, list(devices)))


def lab_probe_output(
    torch: dict[str, Any] | None = None,
    packages: dict[str, str | None] | None = None,
    error: str | None = None,
) -> CommandResult:
    """What llmlab/verify/lab_probe.py prints."""
    report = {
        "python": "3.11.2",
        "packages": packages
        if packages is not None
        else {
            "torch": "2.6.0",
            "transformers": "5.1.0",
            "peft": "0.21.0",
            "bitsandbytes": "0.50.0",
            "accelerate": "1.10.0",
        },
        "torch": torch,
        "torch_error": error,
    }
    return CommandResult(0, json.dumps(report) + "\n")


def cuda_torch(count: int = 8, cuda: str = "12.4", **kw: Any) -> dict[str, Any]:
    base = {
        "version": "2.6.0+cu124",
        "cuda": cuda,
        "cuda_available": count > 0,
        "device_count": count,
        "devices": ["NVIDIA H100 80GB HBM3"] * count,
        "cudnn": 90100,
        "nccl": "2.21.5",
        "bf16": True,
    }
    return base | kw


def make_ctx(config: dict[str, Any] | None = None, level: int = 1, **sources: Any) -> VerifyContext:
    """A context over fakes: a test passes the sources its check reads; the rest answer 'nothing here'."""
    parts: dict[str, Any] = {
        "runner": FakeRunner(),
        "fs": FakeFs(),
        "host": FakeHost(),
        "network": FakeNetwork(),
        "docker": FakeDocker(),
        "nvml": FakeNvml(),
    }
    parts.update(sources)
    return VerifyContext(HostConfig.model_validate(config or {}), Sources(**parts), level=level)


def run_check(check_id: str, ctx: VerifyContext) -> CheckResult:
    import llmlab.verify.checks  # noqa: F401 - registers the catalogue

    (entry,) = [c for c in REGISTRY if c.id == check_id]
    return entry.func(ctx)


def expect(**kw: Any) -> dict[str, Any]:
    """A config dict with only `verify.expect` set."""
    return {"verify": {"expect": kw}}

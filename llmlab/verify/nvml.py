"""GPU state through NVML (nvidia-ml-py), as plain snapshots the GPU checks judge.

The checks never call NVML themselves: they get an `NvmlSnapshot` from an `NvmlReader`. `PynvmlReader` is the
real one; tests hand in readers that return snapshots they build. A reading a GPU does not support (ECC on a
GeForce, row remapping before Ampere, NVLink on a PCIe card) is None: the checks treat it as "not reported".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class NvmlUnavailable(RuntimeError):
    """NVML could not be loaded or initialised (no driver, no GPU, driver/library mismatch)."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_mib: float | None
    name: str = ""


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    uuid: str = ""
    pci_bus_id: str = ""
    memory_total_mib: float | None = None
    persistence_mode: bool | None = None
    performance_state: int | None = None  # 0 = P0 (busy) ... 15 (idle)
    ecc_volatile_uncorrected: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    retired_pages: int | None = None
    retired_pages_pending: bool | None = None
    temperature_c: int | None = None
    slowdown_temperature_c: int | None = None
    clock_event_reasons: int | None = None  # nvmlClocksEventReason* bit mask
    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    nvlink_links: int | None = None  # links the device has
    nvlink_active: int | None = None
    mig_enabled: bool | None = None
    mig_pending: bool | None = None


@dataclass(frozen=True)
class NvmlSnapshot:
    driver_version: str
    cuda_driver_version: int | None  # e.g. 12040 for 12.4: the newest CUDA runtime the driver supports
    devices: list[GpuDevice] = field(default_factory=list)

    @property
    def cuda_driver_version_str(self) -> str | None:
        v = self.cuda_driver_version
        return None if v is None else f"{v // 1000}.{(v % 1000) // 10}"


class NvmlReader(Protocol):
    def snapshot(self) -> NvmlSnapshot: ...


class PynvmlReader:
    """Reads every GPU through nvidia-ml-py. Raises NvmlUnavailable when NVML cannot start."""

    def snapshot(self) -> NvmlSnapshot:
        try:
            import pynvml
        except ImportError as exc:
            raise NvmlUnavailable(f"nvidia-ml-py is not installed: {exc}") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML: {exc}") from None
        try:
            devices = [self._device(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
            cuda = _optional(pynvml, pynvml.nvmlSystemGetCudaDriverVersion)
            return NvmlSnapshot(_text(pynvml.nvmlSystemGetDriverVersion()), cuda, devices)
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML query failed: {exc}") from None
        finally:
            pynvml.nvmlShutdown()

    def _device(self, nv: Any, index: int) -> GpuDevice:
        h = nv.nvmlDeviceGetHandleByIndex(index)

        def get(fn: Callable[..., T], *args: Any) -> T | None:
            return _optional(nv, fn, h, *args)

        remap = get(nv.nvmlDeviceGetRemappedRows)  # (corrected, uncorrectable, pending, failed)
        retired = [get(nv.nvmlDeviceGetRetiredPages, cause) for cause in (0, 1)]  # multi-SBE, DBE
        retired_pending = get(nv.nvmlDeviceGetRetiredPagesPendingStatus)
        mig = get(nv.nvmlDeviceGetMigMode)  # (current, pending)
        memory = get(nv.nvmlDeviceGetMemoryInfo)
        persistence = get(nv.nvmlDeviceGetPersistenceMode)
        links = self._nvlink_states(nv, h)
        return GpuDevice(
            index=index,
            name=_text(nv.nvmlDeviceGetName(h)),
            uuid=_text(get(nv.nvmlDeviceGetUUID) or ""),
            pci_bus_id=_text(getattr(get(nv.nvmlDeviceGetPciInfo), "busId", "") or ""),
            memory_total_mib=None if memory is None else memory.total / 2**20,
            persistence_mode=None if persistence is None else persistence == nv.NVML_FEATURE_ENABLED,
            performance_state=get(nv.nvmlDeviceGetPerformanceState),
            ecc_volatile_uncorrected=get(
                nv.nvmlDeviceGetTotalEccErrors, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC
            ),
            remapped_rows_uncorrectable=None if remap is None else int(remap[1]),
            remap_pending=None if remap is None else bool(remap[2]),
            remap_failed=None if remap is None else bool(remap[3]),
            retired_pages=None
            if retired[0] is None and retired[1] is None
            else sum(len(r or ()) for r in retired),
            retired_pages_pending=None if retired_pending is None else bool(retired_pending),
            temperature_c=get(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
            slowdown_temperature_c=get(
                nv.nvmlDeviceGetTemperatureThreshold, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
            ),
            clock_event_reasons=self._clock_reasons(nv, h),
            pcie_gen=get(nv.nvmlDeviceGetCurrPcieLinkGeneration),
            pcie_gen_max=get(nv.nvmlDeviceGetGpuMaxPcieLinkGeneration)
            or get(nv.nvmlDeviceGetMaxPcieLinkGeneration),
            pcie_width=get(nv.nvmlDeviceGetCurrPcieLinkWidth),
            pcie_width_max=get(nv.nvmlDeviceGetMaxPcieLinkWidth),
            processes=self._processes(nv, h),
            nvlink_links=None if links is None else len(links),
            nvlink_active=None if links is None else sum(links),
            mig_enabled=None if mig is None else mig[0] == nv.NVML_DEVICE_MIG_ENABLE,
            mig_pending=None if mig is None else mig[1] == nv.NVML_DEVICE_MIG_ENABLE,
        )

    @staticmethod
    def _clock_reasons(nv: Any, h: Any) -> int | None:
        # The "ClocksEvent" name replaced "ClocksThrottle" in driver 535; older drivers only have the latter.
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            value = _optional(nv, getattr(nv, name), h)
            if value is not None:
                return int(value)
        return None

    @staticmethod
    def _nvlink_states(nv: Any, h: Any) -> list[bool] | None:
        states = []
        for link in range(nv.NVML_NVLINK_MAX_LINKS):
            state = _optional(nv, nv.nvmlDeviceGetNvLinkState, h, link)
            if state is None:
                continue  # the device has no such link
            states.append(state == nv.NVML_FEATURE_ENABLED)
        return states or None

    @staticmethod
    def _processes(nv: Any, h: Any) -> tuple[GpuProcess, ...]:
        seen: dict[int, GpuProcess] = {}
        for fn in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
            for proc in _optional(nv, fn, h) or ():
                used = proc.usedGpuMemory
                mib = None if used is None else used / 2**20
                if proc.pid in seen and mib is None:
                    continue  # listed by both calls; keep the reading that has the memory
                seen[proc.pid] = GpuProcess(proc.pid, mib, _process_name(proc.pid))
        return tuple(seen.values())


def _optional(nv: Any, fn: Callable[..., T], *args: Any) -> T | None:
    """Call an NVML getter; a reading the device or driver does not offer is None, not an error."""
    try:
        return fn(*args)
    except nv.NVMLError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _process_name(pid: int) -> str:
    import psutil

    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""  # gone, or in another PID namespace (a container): the check says so

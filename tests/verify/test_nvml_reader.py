"""PynvmlReader's mapping from NVML calls to a snapshot, against a stand-in `pynvml` module (no GPU here).

The stand-in has the nvidia-ml-py names and return shapes the reader relies on; it raises NVMLError where a
real GPU would answer "not supported", so the test also covers readings that must become None.
"""

from __future__ import annotations

import os
import sys
import types
from types import SimpleNamespace

import pytest

from llmlab.verify.nvml import NvmlUnavailable, PynvmlReader


class NVMLError(Exception):
    pass


def unsupported(*args: object) -> None:
    raise NVMLError("Not Supported")


def fake_pynvml(init_error: bool = False) -> types.ModuleType:
    nv = types.ModuleType("pynvml")
    constants = {
        "NVMLError": NVMLError,
        "NVML_FEATURE_ENABLED": 1,
        "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
        "NVML_VOLATILE_ECC": 0,
        "NVML_TEMPERATURE_GPU": 0,
        "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN": 1,
        "NVML_DEVICE_MIG_ENABLE": 1,
        "NVML_NVLINK_MAX_LINKS": 36,
    }
    calls = {
        "nvmlInit": unsupported if init_error else lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
        "nvmlSystemGetDriverVersion": lambda: "550.90.07",
        "nvmlSystemGetCudaDriverVersion": lambda: 12040,
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetUUID": lambda h: "GPU-1234",
        "nvmlDeviceGetPciInfo": lambda h: SimpleNamespace(busId=b"00000000:3B:00.0"),
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=80 * 2**30),
        "nvmlDeviceGetPersistenceMode": lambda h: 1,
        "nvmlDeviceGetPerformanceState": lambda h: 0,
        "nvmlDeviceGetTotalEccErrors": lambda h, kind, counter: 2 if (kind, counter) == (1, 0) else 99,
        "nvmlDeviceGetRemappedRows": lambda h: (5, 1, 1, 0),  # corrected, uncorrectable, pending, failed
        "nvmlDeviceGetRetiredPages": unsupported,  # Hopper has row remapping instead
        "nvmlDeviceGetRetiredPagesPendingStatus": unsupported,
        "nvmlDeviceGetMigMode": unsupported,
        "nvmlDeviceGetTemperature": lambda h, sensor: 41,
        "nvmlDeviceGetTemperatureThreshold": lambda h, kind: 87 if kind == 1 else 0,
        "nvmlDeviceGetCurrentClocksEventReasons": unsupported,  # a driver older than 535
        "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: 0x40,
        "nvmlDeviceGetCurrPcieLinkGeneration": lambda h: 4,
        "nvmlDeviceGetGpuMaxPcieLinkGeneration": lambda h: 5,
        "nvmlDeviceGetMaxPcieLinkGeneration": lambda h: 4,
        "nvmlDeviceGetCurrPcieLinkWidth": lambda h: 8,
        "nvmlDeviceGetMaxPcieLinkWidth": lambda h: 16,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=2**30)
        ],
        "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)
        ],
        "nvmlDeviceGetNvLinkState": lambda h, link: (1 if link < 16 else 0) if link < 18 else unsupported(),
    }
    for name, value in (constants | calls).items():
        setattr(nv, name, value)
    return nv


def test_every_reading_lands_in_its_field(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    snapshot = PynvmlReader().snapshot()
    assert snapshot.driver_version == "550.90.07" and snapshot.cuda_driver_version_str == "12.4"
    (gpu,) = snapshot.devices
    assert (gpu.name, gpu.uuid, gpu.pci_bus_id) == ("NVIDIA H100 80GB HBM3", "GPU-1234", "00000000:3B:00.0")
    assert gpu.memory_total_mib == 80 * 1024 and gpu.persistence_mode is True and gpu.performance_state == 0
    assert gpu.ecc_volatile_uncorrected == 2
    assert (gpu.remapped_rows_uncorrectable, gpu.remap_pending, gpu.remap_failed) == (1, True, False)
    assert gpu.retired_pages is None and gpu.retired_pages_pending is None and gpu.mig_enabled is None
    assert (gpu.temperature_c, gpu.slowdown_temperature_c) == (41, 87)
    assert gpu.clock_event_reasons == 0x40  # from the pre-535 name
    assert (gpu.pcie_gen, gpu.pcie_gen_max, gpu.pcie_width, gpu.pcie_width_max) == (4, 5, 8, 16)
    assert (gpu.nvlink_links, gpu.nvlink_active) == (18, 16)
    (proc,) = gpu.processes  # the same pid from the compute and graphics lists counts once
    assert proc.pid == os.getpid() and proc.name and proc.used_mib == 1024


def test_nvml_that_does_not_start_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    with pytest.raises(NvmlUnavailable, match="Not Supported"):
        PynvmlReader().snapshot()


def test_the_real_nvml_on_this_machine_is_unavailable_not_a_crash():
    with pytest.raises(NvmlUnavailable, match="NVML"):
        PynvmlReader().snapshot()

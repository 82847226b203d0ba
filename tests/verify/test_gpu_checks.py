"""GPU checks judged from NVML snapshots a test builds (no GPU here): each failure mode the issue names."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from verify_fakes import FakeHost, FakeNvml, expect, gpus, healthy_gpu, make_ctx, run_check

from llmlab.verify.checks.gpu import parse_xids
from llmlab.verify.nvml import GpuProcess
from llmlab.verify.result import Status

H100 = {"gpu_count": 2, "gpu_model": "H100 SXM"}
GPU_CHECKS = [
    "gpu.count",
    "gpu.driver",
    "gpu.persistence_mode",
    "gpu.ecc_errors",
    "gpu.row_remap",
    "gpu.retired_pages",
    "gpu.temperature",
    "gpu.clock_events",
    "gpu.pcie_link",
    "gpu.processes",
    "gpu.nvlink",
    "gpu.mig",
    "gpu.xid",
]


@pytest.mark.parametrize("check_id", [c for c in GPU_CHECKS if c != "gpu.xid"])  # xid reads the kernel log
def test_without_nvml_gpu_checks_skip_when_no_gpu_is_expected_and_fail_when_some_are(check_id):
    skipped = run_check(
        check_id, make_ctx(expect(gpu_count=0), nvml=FakeNvml(error="NVML: library not found"))
    )
    assert skipped.status == Status.SKIP
    assert "no GPU expected" in skipped.message
    failed = run_check(
        check_id, make_ctx(expect(gpu_count=4), nvml=FakeNvml(error="NVML: library not found"))
    )
    assert failed.status == Status.FAIL
    assert "library not found" in failed.message and failed.hint


def test_a_healthy_pair_of_h100_passes_every_gpu_check():
    ctx = make_ctx(
        expect(**H100, driver_version="550", nvlink_active_links=18),
        nvml=gpus(healthy_gpu(0), healthy_gpu(1)),
    )
    results = {c: run_check(c, ctx) for c in GPU_CHECKS}
    assert {c: r.status for c, r in results.items() if r.status != Status.OK} == {
        "gpu.retired_pages": Status.SKIP
    }
    assert results["gpu.count"].value == "2 x NVIDIA H100 80GB HBM3"
    assert results["gpu.temperature"].items == {"GPU0": 34.0, "GPU1": 34.0}


def test_nvml_is_read_once_per_run_however_many_checks_ask():
    nvml = gpus(healthy_gpu(0), healthy_gpu(1))
    ctx = make_ctx(expect(**H100), nvml=nvml)
    for c in GPU_CHECKS[:5]:
        run_check(c, ctx)
    assert nvml.reads == 1


def test_count_and_model_mismatches_fail():
    one = run_check("gpu.count", make_ctx(expect(**H100), nvml=gpus(healthy_gpu(0))))
    assert one.status == Status.FAIL and "1 GPU(s) found, 2 expected" in one.message
    l4 = replace(healthy_gpu(1), name="NVIDIA L4")
    wrong = run_check("gpu.count", make_ctx(expect(**H100), nvml=gpus(healthy_gpu(0), l4)))
    assert wrong.status == Status.FAIL and "GPU1 is NVIDIA L4" in wrong.message
    unexpected = run_check("gpu.count", make_ctx(expect(gpu_count=0), nvml=gpus(healthy_gpu(0))))
    assert unexpected.status == Status.FAIL


@pytest.mark.parametrize(
    ("pin", "status"),
    [("550", Status.OK), ("550.90.07", Status.OK), ("55", Status.FAIL), ("535.183.01", Status.FAIL)],
)
def test_driver_pin_matches_whole_version_components(pin, status):
    result = run_check(
        "gpu.driver", make_ctx(expect(**H100, driver_version=pin), nvml=gpus(healthy_gpu(0), healthy_gpu(1)))
    )
    assert result.status == status


def test_row_remap_pending_fails_and_names_the_gpu():
    bad = healthy_gpu(1, remap_pending=True, remapped_rows_uncorrectable=1)
    result = run_check("gpu.row_remap", make_ctx(expect(**H100), nvml=gpus(healthy_gpu(0), bad)))
    assert result.status == Status.FAIL
    assert result.message.startswith("GPU1: row remap pending")
    assert "reset" in result.hint
    failed = run_check(
        "gpu.row_remap",
        make_ctx(expect(**H100), nvml=gpus(healthy_gpu(0), healthy_gpu(1, remap_failed=True))),
    )
    assert failed.status == Status.FAIL and "RMA" in failed.hint


def test_row_remapping_not_supported_is_a_skip_not_a_pass():
    old = [
        healthy_gpu(i, remap_pending=None, remap_failed=None, remapped_rows_uncorrectable=None)
        for i in (0, 1)
    ]
    assert run_check("gpu.row_remap", make_ctx(expect(**H100), nvml=gpus(*old))).status == Status.SKIP


def test_pcie_link_at_x8_of_x16_fails():
    narrow = healthy_gpu(0, pcie_width=8)
    result = run_check("gpu.pcie_link", make_ctx(expect(**H100), nvml=gpus(narrow, healthy_gpu(1))))
    assert result.status == Status.FAIL
    assert "x8 of x16" in result.message and result.value == 8
    assert result.items == {"GPU0": 8.0, "GPU1": 16.0}


def test_pcie_generation_below_max_is_normal_when_idle_and_a_warning_when_busy():
    idle = healthy_gpu(0, pcie_gen=1, performance_state=8)
    assert (
        run_check("gpu.pcie_link", make_ctx(expect(**H100), nvml=gpus(idle, healthy_gpu(1)))).status
        == Status.OK
    )
    busy = healthy_gpu(0, pcie_gen=3, performance_state=0)
    result = run_check("gpu.pcie_link", make_ctx(expect(**H100), nvml=gpus(busy, healthy_gpu(1))))
    assert result.status == Status.WARN and "gen 3 of 5" in result.message


def test_uncorrected_ecc_errors_fail():
    result = run_check(
        "gpu.ecc_errors",
        make_ctx(expect(**H100), nvml=gpus(healthy_gpu(0, ecc_volatile_uncorrected=3), healthy_gpu(1))),
    )
    assert result.status == Status.FAIL and result.value == 3


def test_retired_pages_warn_and_pending_retirement_fails():
    v100 = {"remap_pending": None, "remap_failed": None, "name": "Tesla V100-SXM2-32GB"}
    some = healthy_gpu(0, retired_pages=2, retired_pages_pending=False, **v100)
    pending = healthy_gpu(0, retired_pages=2, retired_pages_pending=True, **v100)
    assert (
        run_check("gpu.retired_pages", make_ctx(expect(gpu_count=1), nvml=gpus(some))).status == Status.WARN
    )
    assert (
        run_check("gpu.retired_pages", make_ctx(expect(gpu_count=1), nvml=gpus(pending))).status
        == Status.FAIL
    )


@pytest.mark.parametrize(("temp", "status"), [(70, Status.OK), (80, Status.WARN), (87, Status.FAIL)])
def test_temperature_is_judged_against_the_gpus_own_slowdown_threshold(temp, status):
    result = run_check(
        "gpu.temperature", make_ctx(expect(gpu_count=1), nvml=gpus(healthy_gpu(0, temperature_c=temp)))
    )
    assert result.status == status


def test_configured_temperature_limits_override_the_gpus_threshold():
    limits = {"gpu_temperature_c": {"warn": 60, "fail": 70}}
    config = {"verify": {"expect": {"gpu_count": 1}, "thresholds": limits}}
    result = run_check("gpu.temperature", make_ctx(config, nvml=gpus(healthy_gpu(0, temperature_c=72))))
    assert result.status == Status.FAIL and "limit 70 C" in result.message


@pytest.mark.parametrize(
    ("reasons", "status"),
    [(0x1, Status.OK), (0x4, Status.OK), (0x20, Status.WARN), (0x8, Status.FAIL), (0x40 | 0x4, Status.FAIL)],
)
def test_hardware_clock_slowdowns_fail_and_power_capping_does_not(reasons, status):
    result = run_check(
        "gpu.clock_events",
        make_ctx(expect(gpu_count=1), nvml=gpus(healthy_gpu(0, clock_event_reasons=reasons))),
    )
    assert result.status == status


def test_stray_gpu_processes_warn_unless_allowed():
    procs = (GpuProcess(4242, 30000.0, "python3"), GpuProcess(77, None, ""))
    gpu = healthy_gpu(0, processes=procs)
    result = run_check("gpu.processes", make_ctx(expect(gpu_count=1), nvml=gpus(gpu)))
    assert result.status == Status.WARN
    assert "pid 4242 python3 30000 MiB" in result.message and "pid 77 (not visible here" in result.message
    allowed = {"verify": {"expect": {"gpu_count": 1}, "allowed_gpu_processes": ["python3"]}}
    still = run_check("gpu.processes", make_ctx(allowed, nvml=gpus(gpu)))
    assert "4242" not in still.message and "pid 77" in still.message


def test_inactive_nvlinks_fail_when_links_are_expected():
    degraded = healthy_gpu(1, nvlink_active=16)
    result = run_check(
        "gpu.nvlink", make_ctx(expect(**H100, nvlink_active_links=18), nvml=gpus(healthy_gpu(0), degraded))
    )
    assert result.status == Status.FAIL and "GPU1: 16 of 18 links active" in result.message
    pcie = healthy_gpu(0, name="NVIDIA L4", nvlink_links=None, nvlink_active=None)
    assert run_check("gpu.nvlink", make_ctx(expect(gpu_count=1), nvml=gpus(pcie))).status == Status.SKIP


def test_mig_mode_against_expectation_and_pending_changes():
    on = healthy_gpu(0, mig_enabled=True, mig_pending=True)
    assert (
        run_check("gpu.mig", make_ctx(expect(gpu_count=1, mig_mode=False), nvml=gpus(on))).status
        == Status.FAIL
    )
    pending = healthy_gpu(0, mig_enabled=False, mig_pending=True)
    assert run_check("gpu.mig", make_ctx(expect(gpu_count=1), nvml=gpus(pending))).status == Status.WARN


def test_persistence_mode_off_warns():
    result = run_check(
        "gpu.persistence_mode",
        make_ctx(expect(gpu_count=1), nvml=gpus(healthy_gpu(0, persistence_mode=False))),
    )
    assert result.status == Status.WARN and "nvidia-persistenced" in result.hint


XID_79 = "[ 8421.0] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus."
XID_13 = "[ 9000.1] NVRM: Xid (PCI:0000:18:00): 13, pid=99, name=python, Graphics SM Warp Exception"


def test_parse_xids_reads_pci_address_and_code():
    assert parse_xids([XID_79, "usb 1-1: new device", XID_13]) == [("0000:3b:00", 79), ("0000:18:00", 13)]


def test_xid_79_in_the_kernel_log_fails_and_other_xids_warn():
    critical = run_check(
        "gpu.xid", make_ctx(expect(**H100), nvml=gpus(healthy_gpu(0)), host=FakeHost(log=[XID_13, XID_79]))
    )
    assert critical.status == Status.FAIL
    assert critical.value == [79] and "0000:3b:00" in critical.message
    assert critical.items == {"critical": 1.0, "other": 1.0}
    other = run_check("gpu.xid", make_ctx(expect(**H100), host=FakeHost(log=[XID_13])))
    assert other.status == Status.WARN and other.value == [13]


def test_xid_is_read_even_when_nvml_is_down_because_a_gpu_off_the_bus_can_break_nvml():
    host = FakeHost(log=[XID_79])
    result = run_check(
        "gpu.xid", make_ctx(expect(gpu_count=2), nvml=FakeNvml(error="NVML: unknown error"), host=host)
    )
    assert result.status == Status.FAIL and result.value == [79]


def test_an_unreadable_kernel_log_is_not_reported_as_clean():
    result = run_check("gpu.xid", make_ctx(expect(**H100), host=FakeHost(log=None)))
    assert result.status == Status.FAIL and "cannot read the kernel log" in result.message


def test_xid_window_is_passed_to_the_kernel_log_reader():
    host = FakeHost(log=[])
    ctx = make_ctx({"verify": {"expect": {"gpu_count": 1}, "thresholds": {"xid_window_hours": 2}}}, host=host)
    assert run_check("gpu.xid", ctx).status == Status.OK
    (since,) = host.log_since
    assert since == pytest.approx(time.time() - 7200, abs=60)

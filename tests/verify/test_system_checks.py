"""system checks through fake host facts and filesystem stats."""

from __future__ import annotations

import stat

import pytest
from verify_fakes import GIB, FakeFs, FakeHost, expect, facts, make_ctx, run_check, usage

from llmlab.verify.result import Status
from llmlab.verify.sources import KernelState, PathInfo, kernel_sort_key

STORE_DIR = PathInfo(is_dir=True, uid=0, gid=1500, mode=stat.S_IFDIR | 0o2775)


@pytest.mark.parametrize(("used", "status"), [(50, Status.OK), (75, Status.WARN), (90, Status.FAIL)])
def test_disk_usage_thresholds_on_root(used, status):
    result = run_check("system.disk_root", make_ctx(fs=FakeFs(usages={"/": usage(used)})))
    assert result.status == status
    assert result.value == pytest.approx(used, abs=0.1)
    assert result.expected == "< 70% (fail at 83%)"


def test_disk_thresholds_are_configurable():
    config = {"verify": {"thresholds": {"disk_used_percent": {"warn": 92, "fail": 95}}}}
    assert (
        run_check("system.disk_root", make_ctx(config, fs=FakeFs(usages={"/": usage(90)}))).status
        == Status.OK
    )


def test_model_store_disk_and_inodes_are_checked_on_the_store_path():
    fs = FakeFs(usages={"/models": usage(10, inodes_percent=85)}, paths={"/models": STORE_DIR})
    assert run_check("system.disk_model_store", make_ctx(fs=fs)).status == Status.OK
    inodes = run_check("system.inodes_model_store", make_ctx(fs=fs))
    assert inodes.status == Status.FAIL and "inodes on /models at 85.0%" in inodes.message


def test_a_missing_model_store_is_left_to_the_models_check():
    result = run_check("system.disk_model_store", make_ctx(fs=FakeFs()))
    assert result.status == Status.SKIP and "models.store_writable" in result.message


@pytest.mark.parametrize(
    ("cpus", "status"), [(64, Status.OK), (62, Status.OK), (56, Status.FAIL), (128, Status.WARN)]
)
def test_cpu_count_within_tolerance_of_the_inventory(cpus, status):
    ctx = make_ctx(expect(cpu_count=64), host=FakeHost(host_facts=facts(cpu_count=cpus)))
    assert run_check("system.cpu_count", ctx).status == status


def test_memory_a_few_percent_below_installed_is_fine_a_missing_dimm_is_not():
    reserved = make_ctx(
        expect(memory_gib=512), host=FakeHost(host_facts=facts(memory_bytes=int(503.5 * GIB)))
    )
    assert run_check("system.memory", reserved).status == Status.OK
    dimm_gone = make_ctx(expect(memory_gib=512), host=FakeHost(host_facts=facts(memory_bytes=448 * GIB)))
    result = run_check("system.memory", dimm_gone)
    assert result.status == Status.FAIL and result.value == 448.0 and result.expected == 512


def test_without_expectations_cpu_and_memory_are_reported_not_judged():
    result = run_check("system.cpu_count", make_ctx())
    assert result.status == Status.OK and "no expectation set" in result.message


def test_os_expectation():
    assert run_check("system.os", make_ctx(expect(os="debian 12"))).status == Status.OK
    wrong = run_check("system.os", make_ctx(expect(os="ubuntu 22.04")))
    assert wrong.status == Status.FAIL and "debian 12" in wrong.message


def test_swap_expectation_and_usage():
    on = FakeHost(host_facts=facts(swap_total_bytes=8 * GIB, swap_used_bytes=7 * GIB))
    assert run_check("system.swap", make_ctx(expect(swap=False), host=on)).status == Status.WARN
    heavy = run_check("system.swap", make_ctx(host=on))
    assert heavy.status == Status.WARN and heavy.value == 87.5


def test_unsynchronised_clock_warns_only_when_sync_is_expected():
    assert run_check("system.time_sync", make_ctx(host=FakeHost(synced=False))).status == Status.WARN
    assert (
        run_check(
            "system.time_sync", make_ctx(expect(time_synchronized=False), host=FakeHost(synced=False))
        ).status
        == Status.SKIP
    )
    assert run_check("system.time_sync", make_ctx(host=FakeHost(synced=True))).status == Status.OK


def test_kernel_versions_compare_numerically_within_a_flavour():
    assert kernel_sort_key("6.1.0-18-amd64") == ("amd64", (6, 1, 0, 18))
    assert kernel_sort_key("6.1.0-9-amd64") < kernel_sort_key("6.1.0-18-amd64")
    assert kernel_sort_key("5.15.0-91-generic")[0] == "generic"


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (KernelState(False, "6.1.0-18-amd64", ["6.1.0-9-amd64", "6.1.0-18-amd64"]), Status.OK),
        (KernelState(False, "6.1.0-18-amd64", ["6.1.0-18-amd64", "6.1.0-21-amd64"]), Status.WARN),
        (KernelState(False, "6.1.0-18-amd64", ["6.1.0-21-rt-amd64x"]), Status.OK),  # another flavour
        (KernelState(True, "6.1.0-18-amd64", []), Status.WARN),
    ],
)
def test_reboot_required(state, status):
    assert run_check("system.reboot_required", make_ctx(host=FakeHost(kernels=state))).status == status

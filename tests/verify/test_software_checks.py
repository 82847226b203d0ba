"""software checks through the lab probe's JSON answer (fed through a fake command runner)."""

from __future__ import annotations

import sys

from verify_fakes import (
    FakeHost,
    FakeRunner,
    cuda_torch,
    expect,
    gpus,
    healthy_gpu,
    lab_probe_output,
    make_ctx,
    run_check,
)

from llmlab.verify.cli import _may_run
from llmlab.verify.lab import prefetch
from llmlab.verify.result import Status
from llmlab.verify.sources import CommandResult

PIP_OK = CommandResult(0, "No broken requirements found.\n")


def lab(probe: CommandResult, pip: CommandResult = PIP_OK, python: str = sys.executable) -> FakeRunner:
    return FakeRunner({(python, "-m", "pip", "check"): pip, (python, "-c"): probe})


def test_cpu_torch_on_a_cpu_host_passes_and_gpu_only_checks_skip():
    runner = lab(lab_probe_output(cuda_torch(count=0, cuda=None, version="2.13.0+cpu")))
    ctx = make_ctx(runner=runner)
    assert run_check("software.torch", ctx).status == Status.OK
    for check_id in ("software.cuda_compat", "software.cudnn_nccl", "software.bf16"):
        assert run_check(check_id, ctx).status == Status.SKIP
    assert sum(call[1] == "-c" for call in runner.calls) == 1  # the probe ran once for all four checks


def test_an_environment_without_the_ml_stack_skips_the_torch_checks_without_probing():
    runner = lab(lab_probe_output(None, error="ModuleNotFoundError: No module named 'torch'"))
    ctx = make_ctx(expect(gpu_count=8, ml_stack=False), runner=runner)
    for check_id in ("software.torch", "software.cuda_compat", "software.cudnn_nccl", "software.bf16"):
        result = run_check(check_id, ctx)
        assert result.status == Status.SKIP and "verify.expect.ml_stack" in result.message, check_id
    assert not any(call[1] == "-c" for call in runner.calls)  # no torch import was tried
    assert run_check("software.min_versions", ctx).status == Status.OK  # the others still probe
    assert sum(call[1] == "-c" for call in runner.calls) == 1


def test_cpu_torch_on_a_gpu_host_fails_with_the_right_hint():
    ctx = make_ctx(expect(gpu_count=8), runner=lab(lab_probe_output(cuda_torch(count=0, cuda=None))))
    result = run_check("software.torch", ctx)
    assert result.status == Status.FAIL and "CUDA build of torch" in result.hint


def test_torch_that_does_not_import_fails():
    probe = lab_probe_output(None, error="OSError: libcudart.so.12: cannot open shared object file")
    result = run_check("software.torch", make_ctx(runner=lab(probe)))
    assert result.status == Status.FAIL and "libcudart" in result.message


def test_a_cuda_build_of_torch_on_a_cpu_host_is_not_judged():
    runner = lab(lab_probe_output(cuda_torch(count=0, cuda="12.4")))
    result = run_check("software.cuda_compat", make_ctx(runner=runner))
    assert result.status == Status.SKIP and result.value == "12.4"


def test_cuda_runtime_newer_than_the_driver():
    nvml = gpus(healthy_gpu(0), cuda=12020)
    major = make_ctx(expect(gpu_count=1), runner=lab(lab_probe_output(cuda_torch(1, cuda="13.0"))), nvml=nvml)
    assert run_check("software.cuda_compat", major).status == Status.FAIL
    minor = make_ctx(expect(gpu_count=1), runner=lab(lab_probe_output(cuda_torch(1, cuda="12.4"))), nvml=nvml)
    assert run_check("software.cuda_compat", minor).status == Status.WARN
    fine = make_ctx(expect(gpu_count=1), runner=lab(lab_probe_output(cuda_torch(1, cuda="12.1"))), nvml=nvml)
    assert run_check("software.cuda_compat", fine).status == Status.OK


def test_cuda_pin():
    nvml = gpus(healthy_gpu(0))
    ctx = make_ctx(
        expect(gpu_count=1, cuda_version="12.1"),
        runner=lab(lab_probe_output(cuda_torch(1, cuda="12.4"))),
        nvml=nvml,
    )
    result = run_check("software.cuda_compat", ctx)
    assert result.status == Status.FAIL and result.expected == "12.1"


def test_nccl_is_required_on_multi_gpu_hosts_and_bf16_missing_warns():
    no_nccl = lab(lab_probe_output(cuda_torch(8, nccl=None)))
    assert (
        run_check("software.cudnn_nccl", make_ctx(expect(gpu_count=8), runner=no_nccl)).status == Status.FAIL
    )
    v100 = lab(lab_probe_output(cuda_torch(1, bf16=False)))
    assert run_check("software.bf16", make_ctx(expect(gpu_count=1), runner=v100)).status == Status.WARN


def test_minimum_versions_missing_and_old_packages_fail():
    packages = {
        "torch": "2.3.1",
        "transformers": "5.1.0",
        "peft": None,
        "bitsandbytes": "0.50.0",
        "accelerate": "1.10.0",
    }
    result = run_check(
        "software.min_versions", make_ctx(runner=lab(lab_probe_output(cuda_torch(0), packages)))
    )
    assert result.status == Status.FAIL
    assert result.message == "peft missing; torch 2.3.1 < 2.4"


def test_minimum_versions_are_configurable():
    packages = {"torch": "2.3.1"}
    config = {"verify": {"min_versions": {"torch": "2.3"}}}
    result = run_check(
        "software.min_versions", make_ctx(config, runner=lab(lab_probe_output(cuda_torch(0), packages)))
    )
    assert result.status == Status.OK


def test_pip_check_reports_broken_requirements_and_a_missing_pip():
    broken = CommandResult(1, "peft 0.21.0 has requirement torch>=2.4, but you have torch 2.3.1.\n")
    result = run_check("software.pip_check", make_ctx(runner=lab(lab_probe_output(), pip=broken)))
    assert result.status == Status.FAIL and "peft 0.21.0 has requirement" in result.message
    nopip = CommandResult(1, "", "/venv/bin/python: No module named pip\n")
    assert (
        run_check("software.pip_check", make_ctx(runner=lab(lab_probe_output(), pip=nopip))).status
        == Status.SKIP
    )


def test_a_lab_python_that_cannot_run_fails_every_software_check():
    config = {"verify": {"lab_python": "/opt/lab/bin/python"}}
    ctx = make_ctx(config, runner=FakeRunner())  # nothing answers: command not found
    result = run_check("software.torch", ctx)
    assert result.status == Status.FAIL and "/opt/lab/bin/python could not run the probe" in result.message


def test_prefetch_runs_the_probe_once_in_the_background_for_all_software_checks():
    runner = lab(lab_probe_output(cuda_torch(count=0, cuda=None)))
    ctx = make_ctx(runner=runner)
    prefetch(ctx)
    assert run_check("software.torch", ctx).status == Status.OK
    assert run_check("software.min_versions", ctx).status == Status.OK
    assert sum(call[1] == "-c" for call in runner.calls) == 1


def test_software_is_prefetched_only_when_the_selection_may_include_it():
    assert _may_run("software", [], [])
    assert _may_run("software", ["software.torch"], [])
    assert not _may_run("software", ["gpu", "services"], [])
    assert not _may_run("software", [], ["software"])


def test_each_expected_cuda_toolkit_needs_its_runtime_library():
    config = {"verify": {"expect": {"cuda_toolkits": ["11.8", "12.8"]}}}
    ctx = make_ctx(config, host=FakeHost(libraries={"libcudart.so.11.0"}))
    result = run_check("software.cuda_toolkit", ctx)
    assert result.status == Status.FAIL
    assert "toolkit 12.8" in result.message
    ctx = make_ctx(config, host=FakeHost(libraries={"libcudart.so.11.0", "libcudart.so.12"}))
    assert run_check("software.cuda_toolkit", ctx).status == Status.OK
    assert run_check("software.cuda_toolkit", make_ctx({})).status == Status.SKIP

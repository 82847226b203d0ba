"""Performance probes judged against the catalogue through a fake bench; the torch bench itself on the CPU."""

from __future__ import annotations

import pytest
from verify_fakes import expect, gpus, healthy_gpu, make_ctx, run_check

from llmlab.verify.bench import TorchBench
from llmlab.verify.checks.perf import measure_with_retries, pcie_peak_gbs
from llmlab.verify.result import Status
from llmlab.verify.settings import FractionOfPeak

H100 = {"gpu_count": 2, "gpu_model": "H100 SXM"}


class FakeBench:
    """Returns queued measurements per probe (the last one repeats) and counts the calls."""

    def __init__(self, **queues: list[float]) -> None:
        self.queues = queues
        self.calls: list[tuple] = []

    def _next(self, name: str, *args: object) -> float:
        self.calls.append((name, *args))
        queue = self.queues[name]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def gemm_tflops(self, device: str, dtype: str, seconds: float) -> float:
        return self._next("gemm", device, dtype)

    def memory_bandwidth_gbs(self, device: str, seconds: float) -> float:
        return self._next("membw", device)

    def host_copy_gbs(self, device: str, seconds: float) -> float:
        return self._next("h2d", device)

    def p2p_gbs(self, src: str, dst: str, seconds: float) -> float:
        return self._next("p2p", src, dst)

    def all_reduce_busbw_gbs(self, world_size: int, seconds: float) -> float:
        return self._next("allreduce", world_size)


def ctx_with(bench: FakeBench, config: dict | None = None, n: int = 2, **gpu_kw: object):
    return make_ctx(
        config or expect(**H100),
        level=2,
        nvml=gpus(*[healthy_gpu(i, **gpu_kw) for i in range(n)]),
        bench=bench,
    )


def test_a_gemm_near_peak_passes_and_the_per_gpu_figures_are_reported():
    bench = FakeBench(gemm=[700.0])
    result = run_check("perf.gemm_bf16", ctx_with(bench))
    assert result.status == Status.OK
    assert result.items == {"GPU0": 700.0, "GPU1": 700.0} and result.unit == "TFLOPS"
    assert ("gemm", "cuda:1", "bfloat16") in bench.calls


def test_a_low_result_is_measured_again_before_it_fails():
    recovers = FakeBench(gemm=[100.0, 650.0])  # GPU0: a neighbour's job, then a clean run
    result = run_check("perf.gemm_bf16", ctx_with(recovers, n=1))
    assert result.status == Status.OK and len(recovers.calls) == 2
    stays_low = FakeBench(gemm=[100.0])
    result = run_check("perf.gemm_bf16", ctx_with(stays_low, n=1))
    assert result.status == Status.FAIL and len(stays_low.calls) == 3  # 1 + retries (2)
    assert "10% of 989.5" in result.message and result.hint


def test_retries_stop_as_soon_as_the_fail_line_is_cleared():
    values = iter([100.0, 300.0, 900.0])
    limits = FractionOfPeak(warn=0.55, fail=0.25)
    assert measure_with_retries(lambda: next(values), 1000.0, limits, retries=5) == 300.0


def test_warn_between_the_fractions():
    assert (
        run_check("perf.memory_bandwidth", ctx_with(FakeBench(membw=[2000.0]))).status == Status.WARN
    )  # 60 %


def test_sku_overrides_replace_the_catalogue_peak():
    config = {"verify": {"expect": H100, "sku_overrides": {"H100 SXM": {"bf16_tflops": 500}}}}
    result = run_check("perf.gemm_bf16", ctx_with(FakeBench(gemm=[400.0]), config))
    assert result.status == Status.OK and "80% of 500" in result.message


def test_an_unknown_gpu_is_measured_but_not_judged():
    result = run_check(
        "perf.gemm_bf16", ctx_with(FakeBench(gemm=[50.0]), expect(gpu_count=2), name="NVIDIA B300")
    )
    assert result.status == Status.SKIP and result.value == 50.0 and "no catalogue peak" in result.message


def test_host_copy_is_judged_against_the_pcie_link():
    from llmlab.gpus import find_sku

    assert pcie_peak_gbs(find_sku("H100 SXM")) == pytest.approx(63.0, abs=0.1)
    result = run_check("perf.host_copy", ctx_with(FakeBench(h2d=[20.0])))
    assert result.status == Status.FAIL  # 32 % of a gen5 x16 link


def test_p2p_and_all_reduce_need_two_gpus_and_use_nvlink_when_it_is_up():
    assert run_check("perf.p2p", ctx_with(FakeBench(p2p=[1.0]), n=1)).status == Status.SKIP
    assert run_check("perf.all_reduce", ctx_with(FakeBench(allreduce=[1.0]), n=1)).status == Status.SKIP
    nvlink = run_check("perf.p2p", ctx_with(FakeBench(p2p=[380.0])))
    assert nvlink.status == Status.OK and "of 450" in nvlink.message
    pcie = run_check("perf.p2p", ctx_with(FakeBench(p2p=[40.0]), nvlink_active=0))
    assert pcie.status == Status.OK and "of 63" in pcie.message
    reduce = run_check("perf.all_reduce", ctx_with(FakeBench(allreduce=[100.0])))
    assert reduce.status == Status.FAIL and "22% of 450" in reduce.message


def test_probes_skip_without_gpus_when_none_are_expected():
    assert run_check("perf.gemm_fp16", make_ctx(level=2, bench=FakeBench())).status == Status.SKIP


def test_torch_bench_measurements_run_on_the_cpu():
    bench = TorchBench()
    assert bench.gemm_tflops("cpu", "float32", 0.05, size=64) > 0
    assert bench.memory_bandwidth_gbs("cpu", 0.05, nbytes=1 << 20) > 0
    assert bench.host_copy_gbs("cpu", 0.05, nbytes=1 << 20) > 0
    assert bench.p2p_gbs("cpu", "cpu", 0.05, nbytes=1 << 20) > 0


@pytest.mark.slow
def test_torch_bench_all_reduce_runs_across_processes_with_gloo():
    """The multi-process all-reduce code path, on two CPU processes (NCCL needs GPUs)."""
    assert TorchBench().all_reduce_busbw_gbs(2, 0.2, backend="gloo", nbytes=1 << 20) > 0


def smoke_returning(initial: float, final: float):
    def run_smoke(workdir, steps):
        assert workdir.is_dir() and steps == 8
        print("trainer chatter that must not reach verify's stdout")
        return {"initial_loss": initial, "final_loss": final, "device": "cpu", "seconds": 1.5}

    return lambda: run_smoke


def test_training_smoke_passes_when_the_loss_falls(capsys):
    result = run_check("train.smoke", make_ctx(level=2, smoke=smoke_returning(7.2, 0.5)))
    assert result.status == Status.OK and result.value == 0.5
    assert "chatter" not in capsys.readouterr().out
    assert run_check("train.smoke", make_ctx(level=2, smoke=smoke_returning(7.2, 7.3))).status == Status.FAIL
    assert run_check("train.smoke", make_ctx(level=2)).status == Status.SKIP

"""Selection, crash containment, exit codes, and the three outputs (table, JSON, Prometheus textfile)."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from verify_fakes import FakeFs, gpus, healthy_gpu, make_ctx, usage

from llmlab.atomic import atomic_write
from llmlab.config import ConfigError
from llmlab.verify.report import SCHEMA_VERSION, passed, prometheus_text, render_table, to_json
from llmlab.verify.result import Check, CheckResult, Status, exit_code, fail, ok, skip, warn
from llmlab.verify.runner import catalogue, run_checks, select


def ids(checks: list[Check]) -> set[str]:
    return {c.id for c in checks}


def test_the_catalogue_covers_every_category_and_level_1_has_no_probes():
    all_checks = catalogue()
    assert all_checks[0].category == "system"
    assert {c.category for c in all_checks} == {
        "system",
        "gpu",
        "software",
        "services",
        "models",
        "perf",
        "train",
    }
    level1 = select(1)
    assert not {c.category for c in level1} & {"perf", "train"}
    assert ids(select(2)) == ids(all_checks) == ids(select(3))


def test_only_and_skip_by_category_and_id():
    assert {c.category for c in select(1, only=["gpu", "services"])} == {"gpu", "services"}
    chosen = ids(select(1, only=["gpu"], skip=["gpu.xid"]))
    assert "gpu.xid" not in chosen and "gpu.count" in chosen
    assert ids(select(1, only=["perf.gemm_bf16"])) == {"perf.gemm_bf16"}  # a named id runs at any level
    assert ids(select(1, only=["perf"])) == set()  # a category keeps to the level


def test_unknown_names_are_a_config_error_that_lists_the_categories():
    with pytest.raises(
        ConfigError, match=r"--skip: unknown category or check id 'gpus'; categories: system, gpu"
    ):
        select(1, skip=["gpus"])


def test_a_crashing_check_fails_alone_and_the_others_still_report():
    def boom(ctx):
        raise RuntimeError("unexpected NVML answer")

    crash = Check("gpu.boom", 1, "crashes", boom)
    fine = Check("system.fine", 1, "passes", lambda ctx: ok("fine"))
    results = run_checks(make_ctx(), [fine, crash])
    assert [(r.id, r.status) for r in results] == [("system.fine", Status.OK), ("gpu.boom", Status.FAIL)]
    assert "RuntimeError: unexpected NVML answer" in results[1].message
    assert results[1].category == "gpu"


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([], 0),
        ([Status.OK, Status.SKIP], 0),
        ([Status.OK, Status.WARN], 1),
        ([Status.WARN, Status.FAIL, Status.OK], 2),
    ],
)
def test_exit_codes_are_nagios_style(statuses, code):
    assert exit_code([CheckResult(s, "") for s in statuses]) == code


def sample_results() -> list[CheckResult]:
    results = [
        ok("fine", value=25.5, unit="%"),
        skip("not expected"),
        fail("GPU1: PCIe link x8 of x16", value=8, items={"GPU0": 16.0, "GPU1": 8.0}, hint="reseat the GPU"),
        warn('odd "label"\nvalue', value=True, hint="look"),
    ]
    for r, check_id in zip(
        results, ["system.disk_root", "gpu.mig", "gpu.pcie_link", "system.time_sync"], strict=True
    ):
        r.id, r.category = check_id, check_id.split(".")[0]
    return results


def test_json_report_has_the_versioned_schema_host_facts_and_summary():
    ctx = make_ctx(nvml=gpus(healthy_gpu(0)), fs=FakeFs(usages={"/": usage(25)}))
    report = to_json(sample_results(), ctx, "/etc/llmlab/config.yaml", 1.23, {"only": [], "skip": []})
    json.dumps(report)  # serialisable as is
    assert report["schema"] == "llmlab.verify.report" and report["schema_version"] == SCHEMA_VERSION == 1
    assert report["summary"] == {
        "status": "FAIL",
        "exit_code": 2,
        "passed": False,
        "pass_codes": [0, 1],
        "counts": {"OK": 1, "WARN": 1, "FAIL": 1, "SKIP": 1},
        "duration_s": 1.23,
    }
    assert report["host"]["gpus"] == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-0000", "pci_bus_id": "00000000:18:00.0"}
    ]
    assert report["host"]["driver_version"] == "550.90.07"
    first = report["checks"][0]
    fields = "id category level status message value expected unit hint items duration_s"
    assert set(first) == set(fields.split())


def test_the_verdict_passes_ok_and_warn_by_default_and_follows_the_pass_codes():
    ok_only, with_warn, with_fail = [ok("fine")], [ok("fine"), warn("look")], sample_results()
    assert passed(ok_only) and passed(with_warn) and not passed(with_fail)
    assert not passed(with_warn, (0,)) and passed(with_fail, (0, 1, 2))
    assert passed([]) is True  # nothing selected: exit 0
    report = to_json(with_warn, make_ctx(), "x", 0.1, {}, (0,))
    assert report["summary"]["passed"] is False and report["summary"]["pass_codes"] == [0]


def test_json_host_facts_name_the_nvml_error_on_a_host_without_gpus():
    report = to_json([], make_ctx(), "x", 0.1, {})
    assert report["host"]["gpus"] == [] and "library not found" in report["host"]["nvml_error"]


SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$')


def test_prometheus_text_is_valid_exposition_format_with_a_state_set_and_readings():
    text = prometheus_text(sample_results(), 2.5, now=1700000000)
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), [line for line in samples if not SAMPLE.match(line)]
    assert 'llmlab_verify_check_status{check="gpu.pcie_link",category="gpu",status="fail"} 1' in samples
    assert 'llmlab_verify_check_status{check="gpu.pcie_link",category="gpu",status="ok"} 0' in samples
    assert 'llmlab_verify_check_value{check="gpu.pcie_link",item="GPU1",unit=""} 8' in samples
    assert 'llmlab_verify_check_value{check="system.disk_root",item="",unit="%"} 25.5' in samples
    assert 'llmlab_verify_check_value{check="system.time_sync",item="",unit=""} 1' in samples
    assert (
        "llmlab_verify_exit_code 2" in samples
        and "llmlab_verify_last_run_timestamp_seconds 1700000000" in samples
    )
    assert sum(line.startswith("llmlab_verify_check_status") for line in samples) == 4 * 4


def test_textfile_is_replaced_atomically_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "llmlab_verify.prom"
    target.write_text("old\n")
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["llmlab_verify.prom"]
    assert target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(OSError):
        atomic_write(tmp_path / "missing-dir" / "x.prom", "x")


def test_table_lists_fail_first_with_hints_and_no_colour_when_not_a_tty():
    out = io.StringIO()
    render_table(sample_results(), 1.0, 1, Console(file=out, width=200))
    text = out.getvalue()
    assert "\x1b[" not in text
    rows = [line for line in text.splitlines() if line.startswith("│")]
    statuses = [cell for row in rows if (cell := row.split("│")[1].strip())]  # a message may wrap to 2 lines
    assert statuses == ["FAIL", "WARN", "OK", "SKIP"]
    assert "reseat the GPU" in rows[0]
    assert text.strip().splitlines()[-1].startswith("FAIL: 1 fail, 1 warn, 1 ok, 1 skip")
    coloured = io.StringIO()
    render_table(sample_results(), 1.0, 1, Console(file=coloured, width=200, force_terminal=True))
    assert "\x1b[" in coloured.getvalue()

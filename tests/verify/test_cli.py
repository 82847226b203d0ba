"""`llmlab verify` end to end on this machine (no GPU), and its exit code 3 for bad config or arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmlab.cli import main


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_level_1_on_this_machine_reports_every_check_honestly(tmp_path):
    """No GPU and none expected: GPU checks SKIP with the reason; the exit code matches the worst status."""
    config = write_config(tmp_path, {"model_store": str(tmp_path), "verify": {"expect": {"gpu_count": 0}}})
    done = subprocess.run(
        [sys.executable, "-m", "llmlab.cli", "--config", str(config), "verify", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    assert (
        done.returncode
        == report["summary"]["exit_code"]
        == {"OK": 0, "WARN": 1, "FAIL": 2}[report["summary"]["status"]]
    )
    checks = {c["id"]: c for c in report["checks"]}
    assert not any(c["level"] > 1 for c in checks.values())
    assert all(c["message"] for c in checks.values())
    for check_id in ("gpu.count", "gpu.ecc_errors", "gpu.pcie_link"):
        assert checks[check_id]["status"] == "SKIP" and "no GPU expected" in checks[check_id]["message"]
    assert checks["software.torch"]["status"] == "OK"  # the CPU build of torch, seeing 0 GPUs as expected
    assert checks["software.cuda_compat"]["status"] == "SKIP"
    assert report["host"]["gpus"] == [] and report["host"]["nvml_error"]
    assert not [c for c in checks.values() if c["message"].startswith("check crashed")]


def test_a_host_that_expects_gpus_and_has_none_fails(tmp_path, capsys):
    config = write_config(tmp_path, {"verify": {"expect": {"gpu_count": 8, "gpu_model": "H100 SXM"}}})
    code = main(["--config", str(config), "verify", "--only", "gpu", "--skip", "gpu.xid", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 2
    assert {c["status"] for c in report["checks"]} == {"FAIL"}
    assert "8 GPU(s) expected" in report["checks"][0]["message"]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (
            {"verify": {"expect": {"gpu_model": "H900"}}},
            "verify.expect.gpu_model: Value error, unknown GPU model; valid: H200",
        ),
        ({"verify": {"expect": {"gpus": 8}}}, "verify.expect.gpus: unknown key"),
        (
            {"verify": {"thresholds": {"disk_used_percent": {"warn": 90, "fail": 80}}}},
            "warn (90.0) must not be above fail",
        ),
        (
            {"verify": {"allowed_ports": [22, 70000]}},
            "verify.allowed_ports: Value error, ports must be 1-65535",
        ),
        (
            {"verify": {"jupyter_url": "localhost:8888"}},
            "verify.jupyter_url: Value error, must be an http:// or https://",
        ),
    ],
)
def test_bad_config_exits_3_naming_the_key_and_writes_nothing(tmp_path, capsys, data, named):
    config = write_config(tmp_path, data)
    prom = tmp_path / "out.prom"
    code = main(["--config", str(config), "verify", "--prometheus-textfile", str(prom)])
    assert code == 3
    assert named in capsys.readouterr().err
    assert not prom.exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--only", "gpus"], "unknown category or check id 'gpus'"),
        (["--level", "4"], "--level: '4' is not a level"),
    ],
)
def test_bad_arguments_exit_3(tmp_path, capsys, args, named):
    config = write_config(tmp_path, {})
    assert main(["--config", str(config), "verify", *args]) == 3
    assert named in capsys.readouterr().err


def test_list_prints_the_catalogue(capsys):
    assert main(["verify", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("gpu.xid") for line in lines)
    assert any(line.startswith("perf.all_reduce") and "level 2" in line for line in lines)


def test_an_unwritable_textfile_path_exits_3(tmp_path, capsys):
    config = write_config(tmp_path, {})
    (tmp_path / "no").write_text("a file where the directory would be\n")
    code = main(
        [
            "--config",
            str(config),
            "verify",
            "--only",
            "system.os",
            "--prometheus-textfile",
            str(tmp_path / "no" / "x.prom"),
        ]
    )
    assert code == 3 and "cannot write" in capsys.readouterr().err


def test_the_textfile_goes_into_the_configs_textfile_dir_by_default(tmp_path):
    collector = tmp_path / "collector"  # created when missing
    config = write_config(tmp_path, {"textfile_dir": str(collector)})
    code = main(["--config", str(config), "verify", "--only", "system.os", "--prometheus-textfile"])
    assert code in (0, 1)
    assert "llmlab_verify_check_status" in (collector / "llmlab_verify.prom").read_text()


@pytest.mark.slow
def test_level_2_training_smoke_runs_for_real_and_keeps_stdout_clean(tmp_path):
    """The real llmlab.train.smoke on the CPU: the loss must fall, and --json must still be parseable."""
    config = write_config(tmp_path, {})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmlab.cli",
            "--config",
            str(config),
            "verify",
            "--level",
            "2",
            "--only",
            "train",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    (smoke,) = report["checks"]
    assert smoke["id"] == "train.smoke" and smoke["status"] == "OK", smoke
    assert smoke["value"] < smoke["items"]["initial_loss"]
    assert done.returncode == 0


def test_pass_codes_decide_summary_passed_and_bad_ones_cannot_run(tmp_path, capsys):
    config = write_config(tmp_path, {"verify": {"expect": {"gpu_count": 8}}})
    args = ["--config", str(config), "verify", "--only", "gpu.count", "--json"]
    assert main(args) == 2
    assert json.loads(capsys.readouterr().out)["summary"]["passed"] is False
    assert main([*args, "--pass-codes", "0,1,2"]) == 2  # the exit code keeps its meaning
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["passed"] is True and summary["pass_codes"] == [0, 1, 2]
    assert main([*args, "--pass-codes", "0,3"]) == 3
    assert "--pass-codes" in capsys.readouterr().err
